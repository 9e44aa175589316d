# The unfavourable case for benches/backend.sh: a dataset that observes every clinical event
# (no condition to push into the scan) for every patient, so nothing can be skipped.
from ehrql import create_dataset
from ehrql.tables.tpp import clinical_events, patients

dataset = create_dataset()
dataset.define_population(patients.exists_for_patient())
dataset.events = clinical_events.count_for_patient()
dataset.last_event_date = clinical_events.sort_by(clinical_events.date).last_for_patient().date
dataset.sex = patients.sex
