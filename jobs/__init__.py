"""Background jobs run by Dramatiq workers, with progress users can watch."""
