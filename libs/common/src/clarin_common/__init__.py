"""What every Clarin service shares."""
