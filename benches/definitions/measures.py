# The common shape of a measures definition, for benches/measures.sh: three measures over 24
# monthly intervals, each grouped by sex, age band and practice, with one denominator
# (registered at the interval's start). benches/peers/measures_duckdb.py is the same in SQL.
from ehrql import INTERVAL, Measures, case, codelist_from_csv, months, when
from ehrql.tables.tpp import clinical_events, medications, patients, practice_registrations

vte = codelist_from_csv("codelists/opensafely-venous-thromboembolic-disease.csv", column="CTV3Code")

registration = practice_registrations.for_patient_on(INTERVAL.start_date)
age = patients.age_on(INTERVAL.start_date)
age_band = case(
    when(age < 20).then("0-19"),
    when(age < 40).then("20-39"),
    when(age < 60).then("40-59"),
    when(age < 80).then("60-79"),
    when(age >= 80).then("80+"),
)
events = clinical_events.where(clinical_events.date.is_during(INTERVAL))

measures = Measures()
measures.define_defaults(
    denominator=registration.exists_for_patient(),
    group_by={"sex": patients.sex, "age_band": age_band, "practice": registration.practice_pseudo_id},
    intervals=months(24).starting_on("2022-01-01"),
)
measures.define_measure("any_event", numerator=events.exists_for_patient())
measures.define_measure("vte_event", numerator=events.where(events.ctv3_code.is_in(vte)).exists_for_patient())
measures.define_measure(
    "medication",
    numerator=medications.where(medications.date.is_during(INTERVAL)).exists_for_patient(),
)
# Raw counts, so that benches/measures.sh can compare them with DuckDB's.
measures.configure_disclosure_control(enabled=False)
