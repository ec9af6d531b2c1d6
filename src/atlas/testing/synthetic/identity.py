"""The synthetic patient's identity: UIDs, canary values, and the attributes every file shares."""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

_PRIVATE_CREATOR = "ATLAS SYNTHETIC"


def _uid(seed: int, patient_id: str, role: str, index: int = 0) -> str:
    digest = hashlib.sha256(f"atlas-synthetic|{seed}|{patient_id}|{role}|{index}".encode())
    return "2.25." + str(int.from_bytes(digest.digest()[:16], "big"))


def _ds_num(v: float, decimals: int = 6) -> str:
    """A decimal string (DS) of at most 16 characters."""
    s = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    if len(s) > 16:
        s = f"{v:.8g}"
    return s


@dataclass
class _Identity:
    """All identifying values of the synthetic patient/study (every one a canary)."""

    token: str
    patient_id: str
    values: dict[str, str]
    dates: dict[str, str]
    times: dict[str, str]

    def canaries(self) -> list[str]:
        """Values that must never survive de-identification with Atlas's default options."""
        retained = set(self.retained())
        out = [self.patient_id, *self.values.values(), *self.dates.values(), *self.times.values()]
        return [v for v in dict.fromkeys(out) if v not in retained]

    def retained(self) -> list[str]:
        """Values PS3.15 lets the default options keep.

        Ethnic Group (Retain Patient Characteristics) and times of day (Retain Longitudinal
        Temporal Information with Modified Dates shifts the date, not the time).
        """
        times = [v for k, v in self.times.items() if k != "PatientBirthTime"]
        return [self.values["EthnicGroup"], *times]


def _identity(seed: int, patient_id: str | None) -> _Identity:
    token = hashlib.sha256(f"atlas-synthetic|{seed}".encode()).hexdigest()[:4]
    pid = patient_id if patient_id is not None else f"CANARY-PID-{token}"
    rng = np.random.default_rng([seed, 7919])
    birth = _dt.date(1935, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 25000)))
    study = _dt.date(2014, 1, 1) + _dt.timedelta(days=int(rng.integers(0, 3500)))
    created = study + _dt.timedelta(days=2)
    micro = [int(x) for x in rng.integers(100000, 999999, size=6)]
    t = token
    values = {
        # LO/PN/ST/LT values (≤ 64 chars); SH values (≤ 16 chars) use the short "CNRY" prefix
        "PatientGivenName": f"CANARY-GIVEN-{t}",
        "PatientFamilyName": f"CANARY-NAME-{t}",
        "IssuerOfPatientID": f"CANARY-ISSUER-{t}",
        "OtherPatientID": f"CANARY-OTHERPID-{t}",
        "OtherPatientName": f"CANARY-OTHERNAME-{t}",
        "PatientMotherBirthName": f"CANARY-MOTHER-{t}",
        "PatientAddress": f"CANARY-ADDRESS-{t} 12 Rue Imaginaire",
        "PatientTelephoneNumbers": f"CNRY-TEL-{t}",
        "CountryOfResidence": f"CANARY-COUNTRY-{t}",
        "RegionOfResidence": f"CANARY-REGION-{t}",
        "Occupation": f"CNRY-OCC-{t}",
        "EthnicGroup": f"CNRY-ETH-{t}",
        "MedicalRecordLocator": f"CANARY-MRL-{t}",
        "AdditionalPatientHistory": f"CANARY-HISTORY-{t}",
        "PatientComments": f"CANARY-COMMENT-{t}",
        "InstitutionName": f"CANARY-INSTITUTION-{t}",
        "InstitutionAddress": f"CANARY-INSTADDR-{t} 1 Hospital Way",
        "InstitutionalDepartmentName": f"CANARY-DEPT-{t}",
        "ReferringPhysicianName": f"CANARY-REFPHYS-{t}",
        "ReferringPhysicianAddress": f"CANARY-REFADDR-{t}",
        "ReferringPhysicianTelephoneNumbers": f"CNRY-REFTEL-{t}",
        "PerformingPhysicianName": f"CANARY-PERFPHYS-{t}",
        "NameOfPhysiciansReadingStudy": f"CANARY-READER-{t}",
        "PhysiciansOfRecord": f"CANARY-RECORDPHYS-{t}",
        "RequestingPhysician": f"CANARY-REQPHYS-{t}",
        "OperatorsName": f"CANARY-OPERATOR-{t}",
        "AccessionNumber": f"CNRY-ACC-{t}",
        "StudyID": f"CNRY-SID-{t}",
        "StationName": f"CNRY-STN-{t}",
        "DeviceSerialNumber": f"CANARY-SERIAL-{t}",
        "StudyDescription": f"CANARY-STUDYDESC-{t}",
        "SeriesDescription": f"CANARY-SERIESDESC-{t}",
        "ProtocolName": f"CANARY-PROTOCOL-{t}",
        "RequestedProcedureDescription": f"CANARY-REQPROC-{t}",
        "PerformedProcedureStepDescription": f"CANARY-PPSDESC-{t}",
        "PerformedProcedureStepID": f"CNRY-PPSID-{t}",
        "RequestedProcedureID": f"CNRY-RPID-{t}",
        "ScheduledProcedureStepID": f"CNRY-SPSID-{t}",
        "AdmittingDiagnosesDescription": f"CANARY-DIAGNOSIS-{t}",
        "ImageComments": f"CANARY-IMGCOMMENT-{t}",
        "PrivateText": f"CANARY-PRIVATE-{t}",
        "PrivateShort": f"CNRY-PRIV-{t}",
        "SegSeriesDescription": f"CANARY-SEGDESC-{t}",
        "ContentCreatorName": f"CANARY-CREATOR-{t}",
        "RTSeriesDescription": f"CANARY-RTDESC-{t}",
        "StructureSetLabel": f"CNRY-SSL-{t}",
        "StructureSetName": f"CANARY-SSNAME-{t}",
        "ROIInterpreter": f"CANARY-INTERPRETER-{t}",
    }
    dates = {
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "StudyDate": study.strftime("%Y%m%d"),
        "InstanceCreationDate": created.strftime("%Y%m%d"),
    }
    times = {
        "PatientBirthTime": f"0715{micro[0] % 60:02d}",
        "StudyTime": f"0931{micro[1] % 60:02d}.{micro[1]:06d}",
        "SeriesTime": f"0934{micro[2] % 60:02d}.{micro[2]:06d}",
        "AcquisitionTime": f"0935{micro[3] % 60:02d}.{micro[3]:06d}",
        "ContentTime": f"0936{micro[4] % 60:02d}.{micro[4]:06d}",
        "InstanceCreationTime": f"1102{micro[5] % 60:02d}.{micro[5]:06d}",
    }
    return _Identity(token=token, patient_id=pid, values=values, dates=dates, times=times)


def _fill_patient_study(ds: Any, ident: _Identity, study_uid: str) -> None:
    """Patient, general study and identifying equipment attributes (shared by all objects)."""
    from pydicom.dataset import Dataset

    v, d, t = ident.values, ident.dates, ident.times
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"{v['PatientFamilyName']}^{v['PatientGivenName']}"
    ds.PatientID = ident.patient_id
    ds.IssuerOfPatientID = v["IssuerOfPatientID"]
    ds.PatientBirthDate = d["PatientBirthDate"]
    ds.PatientBirthTime = t["PatientBirthTime"]
    ds.PatientSex = "F"
    ds.PatientAge = "047Y"
    ds.PatientSize = "1.68"
    ds.PatientWeight = "71"
    ds.OtherPatientIDs = v["OtherPatientID"]
    ds.OtherPatientNames = v["OtherPatientName"]
    other = Dataset()
    other.PatientID = v["OtherPatientID"]
    other.IssuerOfPatientID = v["IssuerOfPatientID"]
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = [other]
    ds.PatientMotherBirthName = v["PatientMotherBirthName"]
    ds.PatientAddress = v["PatientAddress"]
    ds.PatientTelephoneNumbers = v["PatientTelephoneNumbers"]
    ds.CountryOfResidence = v["CountryOfResidence"]
    ds.RegionOfResidence = v["RegionOfResidence"]
    ds.Occupation = v["Occupation"]
    ds.EthnicGroup = v["EthnicGroup"]
    ds.MedicalRecordLocator = v["MedicalRecordLocator"]
    ds.AdditionalPatientHistory = v["AdditionalPatientHistory"]
    ds.PatientComments = v["PatientComments"]
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = d["StudyDate"]
    ds.StudyTime = t["StudyTime"]
    ds.StudyID = v["StudyID"]
    ds.AccessionNumber = v["AccessionNumber"]
    ds.StudyDescription = v["StudyDescription"]
    ds.ReferringPhysicianName = v["ReferringPhysicianName"]
    ds.ReferringPhysicianAddress = v["ReferringPhysicianAddress"]
    ds.ReferringPhysicianTelephoneNumbers = v["ReferringPhysicianTelephoneNumbers"]
    ds.PhysiciansOfRecord = v["PhysiciansOfRecord"]
    ds.NameOfPhysiciansReadingStudy = v["NameOfPhysiciansReadingStudy"]
    ds.RequestingPhysician = v["RequestingPhysician"]
    ds.RequestedProcedureDescription = v["RequestedProcedureDescription"]
    ds.AdmittingDiagnosesDescription = v["AdmittingDiagnosesDescription"]
    ds.InstitutionName = v["InstitutionName"]
    ds.InstitutionAddress = v["InstitutionAddress"]
    ds.InstitutionalDepartmentName = v["InstitutionalDepartmentName"]
    ds.StationName = v["StationName"]
    ds.DeviceSerialNumber = v["DeviceSerialNumber"]
    ds.InstanceCreationDate = d["InstanceCreationDate"]
    ds.InstanceCreationTime = t["InstanceCreationTime"]


def _add_private_block(ds: Any, ident: _Identity) -> None:
    block = ds.private_block(0x0009, _PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", ident.values["PrivateText"])
    block.add_new(0x02, "SH", ident.values["PrivateShort"])
    block.add_new(0x03, "DA", ident.dates["PatientBirthDate"])
    block.add_new(0x04, "LO", ident.patient_id)


def _file_meta(sop_class: str, sop_uid: str, ts: str) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

    meta: Any = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta
