"""The click command line: parsing, output and exit codes. Commands stay thin over `vmctl.core`.

`main.COMMANDS` names each command's module; a command's module is imported only when that
command runs, and commands import the `vmctl.core` operation they call inside their function
body. Both are deliberate: `vmctl --help` and completion never load libvirt, paramiko or requests.
"""
