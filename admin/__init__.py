"""Staff console.

Will own the web UI for department staff (licence officers, counter clerks, CA
officers, auditors) over every other package, with roles. Nothing imports it.
"""
