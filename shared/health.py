"""Whether a dependency (RabbitMQ, the store) is reachable, as one service sees it.

A service wraps its broker and store with `observed`: every call that raises a transient error
marks the dependency away, every call it answers marks it back. The transitions are logged once
each (the second with how long it was away), so an outage reads as two lines per service."""

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from shared.broker import Broker, connection_listeners
from shared.broker.queues import Queues
from shared.errors import TRANSIENT_ERRORS, DroneflowError, StoreUnavailable
from shared.metrics import DEPENDENCY_REFUSALS, DEPENDENCY_UP
from shared.store import TaskStore

log = logging.getLogger(__name__)

DependencyName = Literal["rabbitmq", "store"]
PROBE_INTERVAL_S: Final = 0.5
READYZ_PROBE_TASK_ID: Final = "readyz-probe"

T = TypeVar("T")


class Dependency:
    """One dependency of one service. While it is away, callers that can do without it (the
    gateway's publish of a stored task) skip it, except for one probe per PROBE_INTERVAL_S."""

    def __init__(
        self,
        name: DependencyName,
        service: str,
        *,
        probe_interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.service = service
        self._probe_interval_s = probe_interval_s
        self._clock = clock
        self._away_since: float | None = None
        self._last_probe = 0.0
        DEPENDENCY_UP.labels(dependency=name, service=service).set(1)

    @property
    def available(self) -> bool:
        return self._away_since is None

    def away_for_s(self) -> float:
        return 0.0 if self._away_since is None else self._clock() - self._away_since

    def failed(self, reason: object) -> None:
        if self._away_since is not None:
            return
        self._away_since = self._last_probe = self._clock()
        DEPENDENCY_UP.labels(dependency=self.name, service=self.service).set(0)
        log.warning("%s: %s is unavailable: %s", self.service, self.name, reason)

    def succeeded(self) -> None:
        if self._away_since is None:
            return
        away_s = self.away_for_s()
        self._away_since = None
        DEPENDENCY_UP.labels(dependency=self.name, service=self.service).set(1)
        log.warning("%s: %s is back after %.1f s", self.service, self.name, away_s)

    def on_connection(self, lost_because: str | None) -> None:
        if lost_because is None:
            self.succeeded()
        else:
            self.failed(lost_because)

    def should_try(self, grace_s: float = 0.0) -> bool:
        """True while available and for `grace_s` after it went away (one error may be a
        blip); after that, True once per probe interval."""
        if self._away_since is None:
            return True
        now = self._clock()
        if now - self._away_since < grace_s:
            return True
        if now - self._last_probe < self._probe_interval_s:
            return False
        self._last_probe = now
        return True

    def refused(self) -> None:
        """A request was answered 503 (or `unavailable`) for want of this dependency."""
        DEPENDENCY_REFUSALS.labels(dependency=self.name, outcome="refused").inc()

    def deferred(self) -> None:
        """A request was accepted, its work left for later (the dispatcher's sweep)."""
        DEPENDENCY_REFUSALS.labels(dependency=self.name, outcome="deferred").inc()


class _Observed:
    """Forwards every attribute; coroutine methods report their outcome to the dependency.
    With `refuse_after_s`, a dependency away for longer is not called (but for probes): the
    call raises `refusal` at once, rather than wait out a timeout, so that requests do not pile
    up during an outage and the first ones after it are not stuck behind them."""

    def __init__(
        self,
        target: object,
        dependency: Dependency,
        transient: tuple[type[Exception], ...],
        refuse_after_s: float | None = None,
        refusal: type[Exception] = Exception,
    ) -> None:
        self._target = target
        self._dependency = dependency
        self._transient = transient
        self._refuse_after_s = refuse_after_s
        self._refusal = refusal

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        dependency, transient = self._dependency, self._transient
        refuse_after_s, refusal = self._refuse_after_s, self._refusal

        async def call(*args: Any, **kwargs: Any) -> Any:
            if refuse_after_s is not None and not dependency.should_try(refuse_after_s):
                raise refusal(f"{dependency.name} unavailable for {dependency.away_for_s():.1f} s")
            try:
                result = await attribute(*args, **kwargs)
            except transient as exc:
                dependency.failed(exc)
                raise
            except DroneflowError:
                dependency.succeeded()  # it answered, with a refusal of the request
                raise
            dependency.succeeded()
            return result

        # Cached on the instance: __getattr__ runs only for names not found there.
        self.__dict__[name] = call
        return call


def observed(
    target: T,
    dependency: Dependency,
    transient: tuple[type[Exception], ...],
    *,
    refuse_after_s: float | None = None,
    refusal: type[Exception] = Exception,
) -> T:
    """`target` (a Broker or a TaskStore) with its outcomes reported to `dependency`."""
    proxy: Any = _Observed(target, dependency, transient, refuse_after_s, refusal)
    return proxy  # type: ignore[no-any-return]


def observed_adapters(
    service: str, broker: Broker, store: TaskStore
) -> tuple[Broker, TaskStore, Dependency, Dependency]:
    """The service's broker and store, observed, and the two dependencies they report to."""
    broker_health = Dependency("rabbitmq", service)
    store_health = Dependency("store", service)
    # A broker that reports its connection (RabbitMQBroker) is known away even while no call
    # is made, as in a consumer-only service.
    listeners = connection_listeners(broker)
    if listeners is not None:
        listeners.append(broker_health.on_connection)
    return (
        observed(broker, broker_health, TRANSIENT_ERRORS),
        observed(store, store_health, TRANSIENT_ERRORS),
        broker_health,
        store_health,
    )


def refusing_store(store: TaskStore, dependency: Dependency, after_s: float) -> TaskStore:
    """For request handlers: refuses at once while the store has been away for `after_s` (see
    _Observed). Not for consumers, whose requeued messages would then come straight back: their
    retries are paced by the store's own timeout."""
    return observed(
        store, dependency, TRANSIENT_ERRORS, refuse_after_s=after_s, refusal=StoreUnavailable
    )


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /readyz answers: every dependency that failed its probe, with why."""

    problems: dict[DependencyName, str]

    @property
    def ready(self) -> bool:
        return not self.problems

    @property
    def status_code(self) -> int:
        return 200 if self.ready else 503

    def body(self) -> dict[str, str]:
        body = {
            "status": "ready" if self.ready else "unavailable",
            "rabbitmq": "unavailable" if "rabbitmq" in self.problems else "ok",
            "store": "unavailable" if "store" in self.problems else "ok",
        }
        if self.problems:
            body["reason"] = "; ".join(f"{name} {why}" for name, why in self.problems.items())
        return body


async def _probe(name: DependencyName, call: Awaitable[object], timeout_s: float) -> str | None:
    """None when `call` answered; else why not, in words safe to show anyone (/readyz needs no
    token): the driver's message, which may name hosts, goes to the debug log only."""
    try:
        async with asyncio.timeout(timeout_s):
            await call
    except TimeoutError:
        return f"did not answer within {timeout_s:g} s"
    except (DroneflowError, OSError) as exc:
        log.debug("readiness probe of %s failed: %r", name, exc)
        return "is unreachable"
    return None


async def check_readiness(
    broker: Broker, store: TaskStore, queues: Queues, timeout_s: float
) -> Readiness:
    """Ask both dependencies at once for something cheap: the intake queue's depth (RabbitMQ
    declares the queue again) and a task that does not exist (one indexed read)."""
    rabbitmq, store_problem = await asyncio.gather(
        _probe("rabbitmq", broker.queue_depth(queues.intake), timeout_s),
        _probe("store", store.get_task(READYZ_PROBE_TASK_ID), timeout_s),
    )
    problems: dict[DependencyName, str] = {}
    if rabbitmq is not None:
        problems["rabbitmq"] = rabbitmq
    if store_problem is not None:
        problems["store"] = store_problem
    return Readiness(problems)


async def until_done(
    attempt: Callable[[], Awaitable[object]], stop: asyncio.Event, retry_s: float, what: str
) -> bool:
    """Run `attempt` until it returns, trying again every `retry_s` while RabbitMQ or the store
    is unavailable: a dependency that blips as a service starts must not end the service.
    False when `stop` is set first."""
    while not stop.is_set():
        try:
            await attempt()
            return True
        except TRANSIENT_ERRORS as exc:
            log.warning("%s deferred: %s", what, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), retry_s)
    return False
