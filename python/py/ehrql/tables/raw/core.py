from ehrql.tables._catalogue import populate

populate(globals())
del populate
