"""Stacks: several VMs from one file (``vmctl.yaml``), brought up and down together.

`file` reads and validates the file (a JSON schema, with the line of every error), `spec` turns it
into typed specs, `state` keeps what a stack was given (addresses, networks, MACs) so a killed
``up`` resumes, `networks` plans the private segments between the stack's VMs, `guestnet` the
guest side of them (addresses and ``/etc/hosts`` through the seed), `up`/`down`/`status` the verbs.
"""
