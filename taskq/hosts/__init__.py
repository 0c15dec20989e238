"""Several hosts on one machine: replicated Redis groups and network namespaces."""
