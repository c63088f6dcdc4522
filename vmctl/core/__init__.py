"""The operations users ask for, over a typed session; the CLI is a thin layer over these.

Two floors, and no import runs back up:

- the foundation every operation stands on: :mod:`.session` (settings, libvirt, the image store,
  progress and warning sinks: built by the CLI, handed in), :mod:`.instance` (a VM resolved once
  per command: record, files, state read once, its address), :mod:`.states` (the one state
  machine: which verb is legal in which state, and the guarded context every state-dependent verb
  enters through), :mod:`.records`, :mod:`.snapshot_records` (what a snapshot is),
  :mod:`.teardown` (taking a VM apart), :mod:`.namelock`, :mod:`.transaction`, :mod:`.ports`,
  :mod:`.hostports` and :mod:`.plan` (the domain model built by one small builder per section);
- the operations, none of which imports another: :mod:`.create` (create, and run as one
  transaction), :mod:`.lifecycle`, :mod:`.remove`, :mod:`.listing`, :mod:`.reach`,
  :mod:`.snapshots`, :mod:`.commit`, :mod:`.images`, :mod:`.distribution`, :mod:`.doctor`,
  :mod:`.host_info`.

Core raises typed errors (`vmctl.errors`) and never prints or exits; tests/test_architecture.py
holds it to that.
"""
