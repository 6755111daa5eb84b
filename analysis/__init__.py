"""Analysis of run directories: tables and figures of the study."""
