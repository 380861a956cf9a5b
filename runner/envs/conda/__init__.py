"""conda environments without conda: channels resolved like conda, solves and installs by
py-rattler in worker processes, conda-lock.yml read and written."""
