"""Build files (``Vmfile``): a Dockerfile-like recipe whose every RUN/COPY step becomes a cached
qcow2 layer. `parse` reads one into steps (pure); vmctl.core.buildfile runs them."""
