"""Tests of hallmark-key: its rules and the running agent."""
