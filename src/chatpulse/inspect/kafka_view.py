"""Kafka facts for ``inspect``: brokers, topics with offsets and replicas, consumer groups
with members and lag.

Everything comes from confluent-kafka's AdminClient: ``list_topics`` (metadata: live brokers,
each partition's leader, replicas and in-sync replicas),
``list_offsets`` (earliest, latest, and latest under read_committed = the last stable offset),
``describe_configs``, ``list_consumer_groups``, ``describe_consumer_groups`` and
``list_consumer_group_offsets`` (one group per request: a librdkafka limit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    OffsetSpec,
    ResourceType,
)

from chatpulse.inspect.model import (
    BrokerInfo,
    ChangelogTopic,
    GroupInfo,
    GroupMember,
    PartitionLag,
    PartitionOffsets,
    TopicInfo,
)
from chatpulse.topics import Topics

__all__ = [
    "changelog_topics",
    "collect_brokers",
    "collect_groups",
    "collect_topics",
    "parse_internal_topic",
    "topic_offsets",
    "topic_role",
]

logger = logging.getLogger(__name__)

_RETRIES = 6

Offsets = dict[tuple[str, int], tuple[int, int, int]]  # (topic, partition) -> low, high, stable


def parse_internal_topic(name: str) -> tuple[str, str, str, str] | None:
    """Split a Quix internal topic name into (kind, group, source topic, suffix).

    Quix names them ``<kind>__<group>--<source topic>--<suffix>`` (kind ``changelog`` or
    ``repartition``; the suffix is the store name for a changelog), see
    ``quixstreams.models.topics.manager.TopicManager._internal_name``.
    """
    kind, sep, rest = name.partition("__")
    if not sep or kind not in ("changelog", "repartition"):
        return None
    parts = rest.split("--")
    if len(parts) < 3:
        return None
    return kind, parts[0], "--".join(parts[1:-1]), parts[-1]


def topic_role(name: str, topics: Topics) -> str:
    """What a topic is for chatpulse: a contract topic's role, changelog, repartition, other."""
    roles = {
        topics.messages: "messages",
        topics.events: "events",
        topics.stats: "stats",
        topics.tracked: "tracked",
        topics.deadletter: "deadletter",
    }
    if name in roles:
        return roles[name]
    internal = parse_internal_topic(name)
    return internal[0] if internal else "other"


def _offsets(admin: AdminClient, tps: Iterable[tuple[str, int]], timeout: float) -> Offsets:
    wanted = [TopicPartition(topic, partition) for topic, partition in tps]
    if not wanted:
        return {}

    def query(spec: Callable[[], OffsetSpec], **kwargs: object) -> dict[tuple[str, int], int]:
        for attempt in range(_RETRIES):
            futures = admin.list_offsets(
                {tp: spec() for tp in wanted}, request_timeout=timeout, **kwargs
            )
            try:
                return {
                    (tp.topic, tp.partition): fut.result().offset for tp, fut in futures.items()
                }
            except KafkaException as exc:
                # A topic created a moment ago may not have its leader known everywhere yet.
                if not exc.args[0].retriable() or attempt == _RETRIES - 1:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    low = query(OffsetSpec.earliest)
    high = query(OffsetSpec.latest, isolation_level=IsolationLevel.READ_UNCOMMITTED)
    stable = query(OffsetSpec.latest, isolation_level=IsolationLevel.READ_COMMITTED)
    return {key: (low[key], high[key], stable[key]) for key in low}


def _configs(admin: AdminClient, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    result: dict[str, dict[str, str]] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entries = future.result()
        except KafkaException as exc:  # e.g. deleted between listing and describing
            logger.debug("no config for topic %s: %s", resource.name, exc)
            continue
        result[resource.name] = {key: str(entry.value) for key, entry in entries.items()}
    return result


def collect_brokers(metadata: ClusterMetadata) -> list[BrokerInfo]:
    """The brokers the cluster lists as alive, and those that partitions name as replicas but
    the cluster no longer lists (dead or fenced), by node id."""
    brokers = {
        node_id: BrokerInfo(
            node_id, broker.host, broker.port, True, node_id == metadata.controller_id
        )
        for node_id, broker in metadata.brokers.items()
    }
    for topic in metadata.topics.values():
        for part in topic.partitions.values():
            for node_id in part.replicas:
                brokers.setdefault(node_id, BrokerInfo(node_id, "", 0, alive=False))
    return [brokers[node_id] for node_id in sorted(brokers)]


def collect_topics(
    admin: AdminClient,
    select: Callable[[str], bool],
    topics: Topics,
    timeout: float = 10.0,
    metadata: ClusterMetadata | None = None,
) -> list[TopicInfo]:
    """The selected topics with per-partition offsets and replicas, sorted: contract topics
    first. ``metadata``: a ``list_topics`` answer already fetched (else fetched here)."""
    if metadata is None:
        metadata = admin.list_topics(timeout=timeout)
    chosen = sorted(name for name in metadata.topics if select(name))
    parts = {
        (name, pid): part
        for name in chosen
        for pid, part in metadata.topics[name].partitions.items()
    }
    offsets = _offsets(admin, parts, timeout)
    configs = _configs(admin, chosen, timeout)
    order = ["messages", "events", "stats", "tracked", "deadletter", "changelog", "repartition"]
    result = []
    for name in chosen:
        partitions = [
            PartitionOffsets(
                pid,
                *offsets[(name, pid)],
                leader=parts[(name, pid)].leader,
                replicas=list(parts[(name, pid)].replicas),
                isr=sorted(parts[(name, pid)].isrs),
            )
            for pid in sorted(metadata.topics[name].partitions)
            if (name, pid) in offsets
        ]
        config = configs.get(name, {})
        result.append(
            TopicInfo(
                name=name,
                role=topic_role(name, topics),
                partitions=partitions,
                cleanup_policy=config.get("cleanup.policy", ""),
                retention_ms=config.get("retention.ms", ""),
            )
        )
    rank = {role: index for index, role in enumerate(order)}
    result.sort(key=lambda t: (rank.get(t.role, len(order)), t.name))
    return result


def topic_offsets(topics: Iterable[TopicInfo]) -> Offsets:
    """(topic, partition) -> (low, high, stable) of already collected topics."""
    return {(t.name, p.partition): (p.low, p.high, p.stable) for t in topics for p in t.partitions}


def changelog_topics(topics: Iterable[TopicInfo]) -> list[ChangelogTopic]:
    """The changelog topics among ``topics``, with their group, source topic and store."""
    result = []
    for topic in topics:
        internal = parse_internal_topic(topic.name)
        if internal and internal[0] == "changelog":
            _, group, source, store = internal
            result.append(
                ChangelogTopic(
                    topic.name, group, source, store, topic.records, len(topic.partitions)
                )
            )
    return result


def collect_groups(
    admin: AdminClient,
    select: Callable[[str], bool],
    known_offsets: Offsets | None = None,
    timeout: float = 10.0,
) -> list[GroupInfo]:
    """The selected consumer groups: state, members with assignments, and lag per partition."""
    listing = admin.list_consumer_groups(request_timeout=timeout).result()
    ids = sorted(g.group_id for g in listing.valid if select(g.group_id))
    if not ids:
        return []
    descriptions = {
        gid: future.result()
        for gid, future in admin.describe_consumer_groups(ids, request_timeout=timeout).items()
    }
    committed: dict[str, list[TopicPartition]] = {}
    for gid in ids:
        request = [ConsumerGroupTopicPartitions(gid)]
        futures = admin.list_consumer_group_offsets(request, request_timeout=timeout)
        committed[gid] = list(futures[gid].result().topic_partitions or [])
    # Lag of assigned partitions too (None until a first commit), except changelogs: Quix
    # assigns them to restore state and never commits offsets on them.
    assigned = {
        gid: {
            (tp.topic, tp.partition)
            for m in descriptions[gid].members
            for tp in (m.assignment.topic_partitions or [])
            if parse_internal_topic(tp.topic) is None
        }
        for gid in ids
    }
    offsets = dict(known_offsets or {})
    wanted = {(tp.topic, tp.partition) for tps in committed.values() for tp in tps}
    missing = (wanted | set().union(*assigned.values())) - set(offsets)
    offsets.update(_offsets(admin, missing, timeout))
    groups = []
    for gid in ids:
        desc = descriptions[gid]
        members = [
            GroupMember(
                member_id=m.member_id,
                client_id=m.client_id,
                host=m.host,
                assignment=sorted(
                    (tp.topic, tp.partition) for tp in (m.assignment.topic_partitions or [])
                ),
            )
            for m in desc.members
        ]
        positions: dict[tuple[str, int], int | None] = dict.fromkeys(assigned[gid])
        for tp in committed[gid]:
            positions[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        lags = []
        for (topic, partition), position in sorted(positions.items()):
            if (topic, partition) not in offsets:
                continue
            _, high, stable = offsets[(topic, partition)]
            lags.append(PartitionLag(topic, partition, position, high, stable))
        groups.append(
            GroupInfo(
                group_id=gid,
                state=desc.state.name if desc.state is not None else "UNKNOWN",
                assignor=desc.partition_assignor or "",
                coordinator=desc.coordinator.id if desc.coordinator is not None else None,
                members=sorted(members, key=lambda m: m.assignment),
                offsets=lags,
            )
        )
    return groups
