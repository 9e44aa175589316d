# ehrQL's date arithmetic on literal dates: months and years roll forward past the end of
# a shorter month (31 Jan + 1 month = 1 Mar), as the query model does on series.

import datetime


def year_from_date(date):
    return date.year


def month_from_date(date):
    return date.month


def day_from_date(date):
    return date.day


def date_difference_in_days(end, start):
    return (end - start).days


def date_difference_in_months(end, start):
    months = (end.year - start.year) * 12 + end.month - start.month
    return months - 1 if end.day < start.day else months


def date_difference_in_years(end, start):
    years = end.year - start.year
    return years - 1 if (end.month, end.day) < (start.month, start.day) else years


def assert_valid_num_days(num_days):
    if abs(num_days) > 999999999:
        raise ValueError(f"Number of days {num_days} is out of range")


def assert_valid_year(year):
    if not 0 < year <= 9999:
        raise ValueError(f"year {year} is out of range")


def date_add_days(date, num_days):
    assert_valid_num_days(num_days)
    return date + datetime.timedelta(days=num_days)


def date_add_weeks(date, num_weeks):
    return date_add_days(date, num_weeks * 7)


def date_add_months(date, num_months):
    month_index = date.month - 1 + num_months
    year, month = date.year + month_index // 12, month_index % 12 + 1
    assert_valid_year(year)
    try:
        return datetime.date(year, month, date.day)
    except ValueError:
        # The day does not exist in that month: the first of the next (never past December,
        # which is as long as any month).
        return datetime.date(year, month + 1, 1)


def date_add_years(date, num_years):
    year = date.year + num_years
    assert_valid_year(year)
    try:
        return datetime.date(year, date.month, date.day)
    except ValueError:
        # 29 February in a year that has none.
        return datetime.date(year, 3, 1)


def to_first_of_year(date):
    return date.replace(day=1, month=1)


def to_first_of_month(date):
    return date.replace(day=1)


def generate_intervals(date_add_fn, base_date, count):
    one_day = datetime.timedelta(days=1)
    if count >= 0:
        return [(date_add_fn(base_date, i), date_add_fn(base_date, i + 1) - one_day) for i in range(count)]
    return [(date_add_fn(base_date, i - 1) + one_day, date_add_fn(base_date, i)) for i in range(1 + count, 1)]
