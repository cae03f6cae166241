"""Tests of certificate (USB-key) login and certificate enrolment."""
