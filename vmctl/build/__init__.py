"""Image builds from recipes (``templates/recipes/*.toml``) using only Debian packages.

``build`` makes (or finds in its cache) a kernel, an initramfs and a qcow2 root disk;
``recipe_digest`` gives the cache key without building. The strings a built guest prints on its
serial console are `vmctl.guest.contract` (the guest room reads them).
"""

from vmctl.build.builder import BuildResult, build, cached_build
from vmctl.build.recipe import FORMAT_VERSION, Recipe, find_recipe, load_recipe, recipe_digest

__all__ = ["build", "BuildResult", "cached_build", "recipe_digest", "load_recipe", "find_recipe",
           "Recipe", "FORMAT_VERSION"]
