"""Certificate (USB-key) login and the enrolment of USB-key certificates."""
