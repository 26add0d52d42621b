"""`MODEL_ALIASES`: other names for Workers AI models, such as `gpt-4o-mini`.

Many tools only know OpenAI's model names. An alias is accepted wherever a model
name is, listed by `/v1/models` as an entry of its own (`metadata.alias_of`), and the
answer carries the name the client sent. An alias whose model is not allowed (not in
`MODELS`, or not in the catalogue when there is no allow-list) answers 404 like an
unknown model, and the operator learns about it once, at start-up, in the log: once per
gateway, not once per worker, since the workers of one gunicorn share
`PROMETHEUS_MULTIPROC_DIR`, where the first to report leaves a mark named after their
master's pid (so a restart reports again).
"""
import hashlib
import logging
import os
import re

log = logging.getLogger(__name__)

# The same rule the request schemas apply to model names (schemas.MODEL_NAME).
NAME = re.compile(r"(?!.*(^|/)\.{1,2}(/|$))(?!.*//)[A-Za-z0-9@][A-Za-z0-9@._:+/-]{0,199}")


def report_once(message):
    """Log a warning once per gateway start (once per process outside gunicorn)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        digest = hashlib.sha256(message.encode()).hexdigest()[:16]
        mark = os.path.join(folder, f"reported-{os.getppid()}-{digest}")
        try:
            os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return
        except OSError:
            pass  # cannot mark: better twice than never
    log.warning(message)


class Aliases:
    """alias -> model, with the aliases that cannot work found out as early as possible."""

    def __init__(self, aliases, allow_list=()):
        self.aliases = dict(aliases)
        self.allow_list = list(allow_list)
        self._reported = set()

    def __bool__(self):
        return bool(self.aliases)

    def target(self, name):
        """The model an alias stands for; any other name unchanged."""
        target = self.aliases.get(name)
        return target if target and NAME.fullmatch(target) else name

    def static_problems(self):
        """alias -> why it cannot work, from the settings alone."""
        problems = {}
        for alias, target in self.aliases.items():
            if not NAME.fullmatch(alias) or not target:
                problems[alias] = "is not of the form alias=model"
            elif not NAME.fullmatch(target):
                problems[alias] = f"points at '{target}', which is not a model name"
            elif self.allow_list and target not in self.allow_list:
                problems[alias] = f"points at '{target}', which is not in MODELS"
        return problems

    def report_settings(self):
        """Report what is wrong with MODEL_ALIASES as configured (called at start-up)."""
        for alias, problem in self.static_problems().items():
            self._report(alias, problem)

    def check_against(self, records):
        """Report aliases whose model the catalogue does not have (no allow-list case)."""
        for alias, target in self.aliases.items():
            if NAME.fullmatch(target or "") and target not in records:
                self._report(alias, f"points at '{target}', which Cloudflare's catalogue "
                                    "does not list for the tasks this gateway serves")

    def _report(self, alias, problem):
        if alias in self._reported:
            return
        self._reported.add(alias)
        report_once(f"MODEL_ALIASES: the alias '{alias}' {problem}; requests for it get 404.")

    def usable(self, records):
        """The aliases whose model is allowed, for `/v1/models`."""
        allowed = self.allow_list or records
        return {alias: target for alias, target in self.aliases.items()
                if NAME.fullmatch(alias) and target in allowed}
