"""From the config file's models to the supervisor's service specifications."""

from __future__ import annotations

from procvisor.daemon._envfile import EnvFileError, read_env_files
from procvisor.daemon._files import DEFAULT_CONFIG_NAME, ConfigError
from procvisor.daemon.config import Config, Service
from procvisor.policy.restart import Backoff, RestartMode, RestartPolicy
from procvisor.supervisor import ChangeWatch, HookSpec, LogSpec, ProbeSpec, ServiceSpec

__all__ = ["service_specs"]


def _spec(name: str, s: Service, config: Config) -> ServiceSpec:
    health = None
    if s.health is not None:
        h = s.health
        health = ProbeSpec(
            type=h.type,
            url=getattr(h, "url", None),
            host=getattr(h, "host", "127.0.0.1"),
            port=getattr(h, "port", None),
            command=getattr(h, "command", None),
            interval=h.interval,
            timeout=h.timeout,
            start_period=h.start_period,
            failure_threshold=h.failure_threshold,
            success_threshold=h.success_threshold,
            on_unhealthy=h.on_unhealthy,
        )
    return ServiceSpec(
        name=name,
        command=s.command,
        instances=s.instances,
        cwd=s.cwd,
        env={**read_env_files(s.env_file), **s.env},
        inherit_env=s.inherit_env,
        user=s.user,
        group=s.group,
        umask=s.umask,
        restart=RestartPolicy(
            restart=RestartMode(s.restart),
            success_exit_codes=frozenset(s.success_exit_codes),
            min_uptime=s.min_uptime,
            backoff=Backoff(
                initial=s.backoff.initial,
                max=s.backoff.max,
                multiplier=s.backoff.multiplier,
                jitter=s.backoff.jitter,
            ),
            max_restarts=s.max_restarts,
            restart_window=s.restart_window,
            cooldown=s.cooldown,
        ),
        restart_cron=s.restart_cron,
        restart_on_change=None
        if s.restart_on_change is None
        else ChangeWatch(
            paths=s.restart_on_change.paths,
            ignore=s.restart_on_change.ignore,
            debounce=s.restart_on_change.debounce,
        ),
        stop_signal=s.stop_signal,
        stop_timeout=s.stop_timeout,
        depends_on=tuple(s.depends_on),
        wait_healthy=tuple(n for n, condition in s.depends_on.items() if condition == "healthy"),
        wait_completed=tuple(n for n, c in s.depends_on.items() if c == "completed"),
        sockets=tuple((n, str(config.sockets[n].address)) for n in s.sockets),
        autostart=s.autostart,
        hooks=HookSpec(
            pre_start=s.hooks.pre_start,
            post_start=s.hooks.post_start,
            pre_stop=s.hooks.pre_stop,
            post_stop=s.hooks.post_stop,
            on_failure=s.hooks.on_failure,
            timeout=s.hooks.timeout,
        ),
        health=health,
        limits=s.limits,
        logs=LogSpec(
            max_size=s.logs.max_size,
            backups=s.logs.backups,
            timestamps=s.logs.timestamps,
            merge_stderr=s.logs.merge_stderr,
        ),
        notify=s.notify,
        start_timeout=s.start_timeout,
        watchdog=s.watchdog,
        on_oom=s.on_oom,
    )


def service_specs(config: Config, source: str = DEFAULT_CONFIG_NAME) -> list[ServiceSpec]:
    """The config's services as specs, in the file's order; their env files are read now.

    Raises:
        ConfigError: an env file cannot be read or is malformed (``source`` names the file).
    """
    specs = []
    for name, service in config.services.items():
        try:
            specs.append(_spec(name, service, config))
        except EnvFileError as exc:
            raise ConfigError.single(source, f"services.{name}.env_file", str(exc)) from None
    return specs
