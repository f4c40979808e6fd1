"""istioctl as a subprocess: the one place meshops runs it.

Commands are argument lists (never shell strings). Each call returns an
``IstioctlResult``; a failure raises ``IstioctlFailed`` carrying that result, whose
message shows the tail of the output. ``find_istioctl`` picks the binary whose client
version is exactly the one asked for, because an istioctl of another version installs
another Istio.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Sequence

from meshops.domain.errors import BadInput
from meshops.domain.proxies import parse_version_json
from meshops.drivers.istioctl_api import IstioctlApi as IstioctlApi
from meshops.drivers.istioctl_api import IstioctlFailed as IstioctlFailed
from meshops.drivers.istioctl_api import IstioctlResult as IstioctlResult


class Istioctl:
    """One istioctl binary bound to a kubeconfig and context."""

    def __init__(self, path: str, *, version: str, kubeconfig: str | None = None, context: str | None = None) -> None:
        self.path = path
        self.version = version
        self._kube_args: list[str] = []
        if kubeconfig:
            self._kube_args += ["--kubeconfig", kubeconfig]
        if context:
            self._kube_args += ["--context", context]

    def run(self, args: Sequence[str], *, ok_codes: Sequence[int] = (0,), timeout: float = 600.0,
            stdin: str | None = None) -> IstioctlResult:
        import sh

        argv = [*args, *self._kube_args]
        cmd = sh.Command(self.path)
        try:
            proc = cmd(*argv, _return_cmd=True, _ok_code=list(ok_codes), _timeout=timeout, _in=stdin,
                       _env=_child_env(), _err_to_out=False, _new_group=True, _preexec_fn=_die_with_parent())
            result = IstioctlResult(argv=(self.path, *argv), exit_code=proc.exit_code,
                                    stdout=str(proc), stderr=_text(proc.stderr))
        except sh.ErrorReturnCode as exc:
            result = IstioctlResult(argv=(self.path, *argv), exit_code=exc.exit_code,
                                    stdout=_text(exc.stdout), stderr=_text(exc.stderr))
            raise IstioctlFailed(result) from None
        except sh.TimeoutException:
            result = IstioctlResult(argv=(self.path, *argv), exit_code=-9, stdout="", stderr=f"timed out after {timeout}s")
            raise IstioctlFailed(result, temporary=True) from None
        except sh.SignalException as exc:
            result = IstioctlResult(argv=(self.path, *argv), exit_code=exc.exit_code,
                                    stdout=_text(exc.stdout), stderr=_text(exc.stderr))
            raise IstioctlFailed(result, temporary=True) from None
        return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


# What istioctl may see of our environment: where to find things (PATH, HOME, KUBECONFIG),
# locale and time zone, proxies and CA bundles, and its own ISTIOCTL_* settings. Not AWS keys,
# tokens, MESHOPS_PARAM_* secrets or anything else a CI job happens to export.
_ENV_ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "KUBECONFIG", "TMPDIR", "TZ", "LANG", "LANGUAGE", "TERM",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME",
})
_ENV_PREFIXES = ("LC_", "ISTIOCTL_")


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k in _ENV_ALLOWED or k.startswith(_ENV_PREFIXES)}


def _die_with_parent() -> Callable[[], None]:
    """A pre-exec hook: the child gets SIGKILL when meshops dies, however it dies.

    Linux's PR_SET_PDEATHSIG (prctl(2)); a parent already gone by then is caught by the
    getppid() check. The child also gets its own process group (``_new_group``), so a
    terminal's Ctrl-C reaches meshops alone and meshops decides how to stop it.
    """
    parent = os.getpid()

    def hook() -> None:
        if sys.platform.startswith("linux"):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)

    return hook


def client_version(path: str) -> str | None:
    """The client version an istioctl binary reports (``istioctl version --remote=false -o json``)."""
    import sh

    try:
        out = str(sh.Command(path)("version", "--remote=false", "-o", "json", _timeout=30, _env=_child_env()))
    except (sh.ErrorReturnCode, sh.TimeoutException, sh.CommandNotFound, OSError):
        return None
    try:
        return parse_version_json(out).client or None  # capitalised keys, every version (reference §4)
    except (ValueError, KeyError, TypeError, AttributeError):
        m = re.search(r"(\d+\.\d+\.\d+\S*)", out)
        return m.group(1) if m else None


def find_istioctl(version: str, *, explicit: str | None = None) -> str:
    """The path of an istioctl whose client version is exactly ``version``.

    Order: ``explicit`` (``--istioctl PATH``), ``istioctl-<version>`` on PATH, then
    ``istioctl`` on PATH. Raises BadInput naming what was found otherwise.
    """
    seen: list[str] = []
    candidates = [explicit] if explicit else [shutil.which(f"istioctl-{version}"), shutil.which("istioctl")]
    for path in candidates:
        if not path:
            continue
        found = client_version(path)
        if found == version:
            return path
        seen.append(f"{path} is {found or 'unknown'}")
    where = "; ".join(seen) if seen else "none on PATH"
    raise BadInput(f"no istioctl {version} found ({where})",
                   hint=f"install istioctl {version} as istioctl-{version} on PATH, or pass --istioctl PATH")


def installed_istioctls() -> dict[str, str]:
    """Every ``istioctl`` and ``istioctl-<version>`` on PATH, by the version it reports."""
    out: dict[str, str] = {}
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not d or not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if name == "istioctl" or re.fullmatch(r"istioctl-\d+\.\d+\.\d+\S*", name):
                path = os.path.join(d, name)
                if os.access(path, os.X_OK):
                    version = client_version(path)
                    if version and version not in out:
                        out[version] = path
    return out
