"""Package discovery for setuptools (the rest of the metadata is in pyproject.toml).

templates/ stays at the top of the repository, where profiles and recipes are reviewed as data,
and ships inside the wheel as the package ``vmctl._templates`` so a pip-installed vmctl has the
built-in profiles and recipes too (see ``vmctl.config.templates_dir``).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["vmctl", "vmctl.*"]), "vmctl._templates"],
    package_dir={"vmctl._templates": "templates"},
    package_data={"vmctl._templates": ["**/*"]},
    include_package_data=False,
)
