# The methods and properties ehrQL's table classes define (`patients.age_on(date)`,
# `practice_registrations.for_patient_on(date)`, …), as mixins for the classes quarry builds
# from its table catalogue. Written for quarry from ehrQL's documented behaviour.

from ehrql.query_language import case, when


class Patients:
    def age_on(self, date):
        """Patient's age as an integer, in whole elapsed calendar years, as it would be on
        the given date."""
        return (date - self.date_of_birth).years

    def is_alive_on(self, date):
        """Whether a patient is alive on the given date, based on the date of death."""
        return self.date_of_death.is_after(date) | self.date_of_death.is_null()

    def is_dead_on(self, date):
        """Whether a patient has a date of death before the given date."""
        return self.date_of_death.is_not_null() & self.date_of_death.is_before(date)


class BetaPatients:
    def age_on(self, date):
        return (date - self.date_of_birth).years


class EmisPatients:
    def age_on(self, date):
        return (date - self.date_of_birth).years

    def has_practice_registration_spanning(self, start_date, end_date):
        return self.registration_start_date.is_on_or_before(start_date) & (
            self.registration_end_date.is_after(end_date) | self.registration_end_date.is_null()
        )


class PracticeRegistrations:
    def for_patient_on(self, date):
        """The registration current on the given date (the latest started, ties broken by
        end date then practice)."""
        ordered = self.spanning(date, date).sort_by(self.start_date, self.end_date, self.practice_pseudo_id)
        return ordered.last_for_patient()

    def exists_for_patient_on(self, date):
        return self.spanning(date, date).exists_for_patient()

    def spanning(self, start_date, end_date):
        return self.where(
            self.start_date.is_on_or_before(start_date) & (self.end_date.is_on_or_after(end_date) | self.end_date.is_null())
        )


class TppPracticeRegistrations(PracticeRegistrations):
    def spanning_with_systmone(self, start_date, end_date):
        return self.spanning(start_date, end_date).where(self.practice_systmone_go_live_date <= start_date)


class EmisV2PracticeRegistrations(PracticeRegistrations):
    def for_patient_on(self, date):
        return self.spanning(date, date).sort_by(self.start_date).last_for_patient()


class BetaPracticeRegistrations:
    """Pre-1.0 (ehrql.tables.beta.tpp): `for_patient_on` and `spanning` only."""

    for_patient_on = PracticeRegistrations.for_patient_on
    spanning = PracticeRegistrations.spanning


def _imd_band(imd, bands):
    labels = {1: "1 (most deprived)", bands: f"{bands} (least deprived)"}
    cases = [when((imd >= 0) & (imd <= int(32844 * 1 / bands))).then(labels[1])]
    for i in range(2, bands + 1):
        cases.append(when(imd <= int(32844 * i / bands)).then(labels.get(i, str(i))))
    return case(*cases, otherwise="unknown")


class PostcodeAddresses:
    def for_patient_on(self, date):
        """The address current on the given date, preferring addresses with a postcode."""
        current = self.where(self.start_date <= date).except_where(self.end_date < date)
        ordered = current.sort_by(
            case(when(self.has_postcode).then(1), otherwise=0), self.start_date, self.end_date, self.address_id
        )
        return ordered.last_for_patient()


class TppAddresses(PostcodeAddresses):
    @property
    def imd_quintile(self):
        """Index of Multiple Deprivation quintile, 1 (most deprived) to 5 (least deprived)."""
        return _imd_band(self.imd_rounded, 5)

    @property
    def imd_decile(self):
        """Index of Multiple Deprivation decile, 1 (most deprived) to 10 (least deprived)."""
        return _imd_band(self.imd_rounded, 10)


class StartDateAddresses:
    def for_patient_on(self, date):
        current = self.where(self.start_date <= date).except_where(self.end_date < date)
        return current.sort_by(self.start_date).last_for_patient()


class OnsDeaths:
    def cause_of_death_is_in(self, codelist):
        """Whether the underlying or any contributing cause of death is in the codelist."""
        columns = ["underlying_cause_of_death", *[f"cause_of_death_{i:02d}" for i in range(1, 16)]]
        conditions = [getattr(self, column).is_in(codelist) for column in columns]
        result = conditions[0]
        for condition in conditions[1:]:
            result = result | condition
        return result


class DecisionSupportValues:
    def electronic_frailty_index(self):
        return self.where(self.algorithm_description == "UK Electronic Frailty Index (eFI)").where(
            self.algorithm_version == "1.0"
        )


# (module, table) -> mixin. Tables with helpers in quarry's catalogue must appear here
# (tests/tables check both ways).
MIXINS = {
    ("ehrql.tables.core", "patients"): Patients,
    ("ehrql.tables.core", "practice_registrations"): PracticeRegistrations,
    ("ehrql.tables.core", "ons_deaths"): OnsDeaths,
    ("ehrql.tables.tpp", "addresses"): TppAddresses,
    ("ehrql.tables.tpp", "decision_support_values"): DecisionSupportValues,
    ("ehrql.tables.tpp", "practice_registrations"): TppPracticeRegistrations,
    ("ehrql.tables.emis", "patients"): EmisPatients,
    ("ehrql.tables.emis", "practice_registrations"): PracticeRegistrations,
    ("ehrql.tables.emisv2", "addresses"): StartDateAddresses,
    ("ehrql.tables.emisv2", "practice_registrations"): EmisV2PracticeRegistrations,
    ("ehrql.tables.beta.core", "patients"): BetaPatients,
    ("ehrql.tables.beta.tpp", "practice_registrations"): BetaPracticeRegistrations,
    ("ehrql.tables.beta.tpp", "addresses"): PostcodeAddresses,
}
