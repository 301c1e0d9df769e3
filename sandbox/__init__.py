"""Docker sandbox: run one attempt of untrusted user code in a throwaway container.

Knows nothing of Celery, Flask or the database; workers call :class:`DockerRunner`.
"""

from sandbox.errors import ImageBuildError, SandboxUnavailable
from sandbox.images import DEFAULT_IMAGES, build_images
from sandbox.runner import DockerRunner
from sandbox.spec import Limits, RunResult, RunSpec

__all__ = ["DEFAULT_IMAGES", "DockerRunner", "ImageBuildError", "Limits", "RunResult", "RunSpec",
           "SandboxUnavailable", "build_images"]
