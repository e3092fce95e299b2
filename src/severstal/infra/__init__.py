"""Infrastructure written once for every stage: the config schema, artifact paths, stamps and the up-to-date
policy, atomic files, locks, figures, CSV tables, image folders, user errors."""
