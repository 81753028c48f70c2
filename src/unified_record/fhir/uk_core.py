"""UK Core and NHS England identifier systems, profile URLs and code systems, in one place."""

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_CODE_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"

PROFILE_PATIENT = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"
PROFILE_CONDITION = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Condition"
PROFILE_MEDICATION_STATEMENT = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-MedicationStatement"
PROFILE_ALLERGY_INTOLERANCE = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-AllergyIntolerance"
PROFILE_ENCOUNTER = "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Encounter"

EXT_NHS_NUMBER_VERIFICATION = (
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
)
CS_NHS_NUMBER_VERIFICATION = (
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
)
EXT_ETHNIC_CATEGORY = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory"
CS_ETHNIC_CATEGORY = "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategoryEngland"

SNOMED = "http://snomed.info/sct"
DMD = "https://dmd.nhs.uk"
CS_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CS_ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
CS_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

NHS_NUMBER_VERIFICATION_DISPLAY = {
    "01": "Number present and verified",
    "02": "Number present but not traced",
}
