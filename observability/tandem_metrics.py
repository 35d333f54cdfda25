"""The metrics Tandem exports, as the dashboards, alerts and tests rely on them.

This is the contract between the binaries and the chart (docs/observability.md has the prose
version). Each family lists its type, its own labels and whether a clean run of calls through the
local platform must produce a sample of it (`on_load`). Families that only move on an event the
load does not cause (a failed call, a refused call, transcoding, an operator that is not running
locally) are still part of the contract; the end-to-end test reports them instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Family:
    """One metric family of the contract."""

    name: str
    kind: str
    component: str
    labels: frozenset[str] = field(default_factory=frozenset)
    on_load: bool = False

    def series_names(self) -> set[str]:
        """The sample names Prometheus stores for the family."""
        if self.kind == HISTOGRAM:
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count"}
        return {self.name}


def _f(name, kind, component, labels=(), on_load=False):
    return Family(name, kind, component, frozenset(labels), on_load)


FAMILIES: tuple[Family, ...] = (
    # signaling-pod, admin :9101
    _f("tandem_signaling_calls_total", COUNTER, "signaling", ["outcome"], on_load=True),
    _f("tandem_signaling_calls_active", GAUGE, "signaling", on_load=True),
    _f("tandem_signaling_call_ends_total", COUNTER, "signaling", ["reason"], on_load=True),
    # Only once a REFER arrives in an answered call.
    _f("tandem_signaling_transfers_total", COUNTER, "signaling", ["trunk", "mode", "result"]),
    _f("tandem_signaling_sip_messages_total", COUNTER, "signaling", ["direction", "kind"], on_load=True),
    _f("tandem_signaling_sip_parse_errors_total", COUNTER, "signaling", ["transport"]),
    _f("tandem_signaling_sip_dropped_messages_total", COUNTER, "signaling", on_load=True),
    _f("tandem_signaling_ng_requests_total", COUNTER, "signaling", ["command", "result"], on_load=True),
    # Per media pod of the pool, created at zero when the pod joins.
    _f("tandem_signaling_ng_retransmissions_total", COUNTER, "signaling", ["media_pod"], on_load=True),
    _f("tandem_signaling_ng_timeouts_total", COUNTER, "signaling", ["media_pod"], on_load=True),
    _f("tandem_signaling_media_pod_up", GAUGE, "signaling", ["media_pod"], on_load=True),
    _f("tandem_signaling_trunk_attempts_total", COUNTER, "signaling", ["trunk", "direction"], on_load=True),
    _f("tandem_signaling_trunk_answers_total", COUNTER, "signaling", ["trunk", "direction"], on_load=True),
    _f("tandem_signaling_trunk_failures_total", COUNTER, "signaling", ["trunk", "direction", "code_class"]),
    _f("tandem_signaling_trunk_calls_active", GAUGE, "signaling", ["trunk", "direction"], on_load=True),
    _f("tandem_signaling_call_duration_seconds", HISTOGRAM, "signaling", ["trunk"], on_load=True),
    _f("tandem_signaling_call_setup_seconds", HISTOGRAM, "signaling", on_load=True),
    # The local test adds a health-checked trunk whose peer never answers, so this has a sample.
    _f("tandem_signaling_trunk_peer_up", GAUGE, "signaling", ["trunk", "peer"], on_load=True),
    _f("tandem_signaling_admission_rejections_total", COUNTER, "signaling", ["trunk", "direction", "limit"], on_load=True),
    _f("tandem_signaling_overload_rejections_total", COUNTER, "signaling", on_load=True),
    _f("tandem_signaling_new_call_queue_delay_seconds", GAUGE, "signaling", ["shard"], on_load=True),
    # Created at zero for each result, so a sample exists from the start.
    _f("tandem_signaling_route_lookups_total", COUNTER, "signaling", ["result"], on_load=True),
    # Only for RoutePlans with rate decks (the local example has none).
    _f("tandem_signaling_rate_deck_prefixes", GAUGE, "signaling", ["route_plan", "deck"]),
    _f("tandem_signaling_rate_deck_rows", GAUGE, "signaling", ["route_plan", "deck"]),
    _f("tandem_signaling_rate_deck_valid", GAUGE, "signaling", ["route_plan", "deck"]),
    _f("tandem_signaling_rate_deck_reloads_total", COUNTER, "signaling", ["route_plan", "deck"]),
    _f("tandem_signaling_rate_deck_reload_failures_total", COUNTER, "signaling", ["route_plan", "deck"]),
    _f("tandem_signaling_auth_failures_total", COUNTER, "signaling", ["trunk", "reason"]),
    _f("tandem_signaling_auth_blocked_sources", GAUGE, "signaling", on_load=True),
    # Only for Trunks with outbound.registration enabled (the local example has none).
    _f("tandem_signaling_trunk_registration_state", GAUGE, "signaling", ["trunk", "state"]),
    _f("tandem_signaling_trunk_registration_attempts_total", COUNTER, "signaling", ["trunk"]),
    _f("tandem_signaling_trunk_registration_failures_total", COUNTER, "signaling", ["trunk", "reason"]),
    # Only for trunk peers and registrars named by host (the local example has addresses).
    _f("tandem_signaling_dns_lookups_total", COUNTER, "signaling", ["type", "result"]),
    _f("tandem_signaling_draining", GAUGE, "signaling", on_load=True),
    # Call detail records (the local platform writes them to a directory; no endpoint).
    _f("tandem_signaling_cdr_records_written_total", COUNTER, "signaling", on_load=True),
    _f("tandem_signaling_cdr_records_delivered_total", COUNTER, "signaling", on_load=True),
    _f("tandem_signaling_cdr_post_failures_total", COUNTER, "signaling", ["reason"], on_load=True),
    _f("tandem_signaling_cdr_write_errors_total", COUNTER, "signaling", on_load=True),
    _f("tandem_signaling_cdr_spool_records", GAUGE, "signaling", on_load=True),
    # media-pod, admin :9102
    _f("tandem_media_ng_commands_total", COUNTER, "media", ["command"], on_load=True),
    _f("tandem_media_ng_errors_total", COUNTER, "media", ["reason"]),
    _f("tandem_media_sessions_active", GAUGE, "media", on_load=True),
    _f("tandem_media_ports_allocated", GAUGE, "media", on_load=True),
    _f("tandem_media_ports_capacity", GAUGE, "media", on_load=True),
    _f("tandem_media_relayed_packets_total", COUNTER, "media", ["kind"], on_load=True),
    _f("tandem_media_relayed_bytes_total", COUNTER, "media", ["kind"], on_load=True),
    _f("tandem_media_dropped_packets_total", COUNTER, "media", ["reason"]),
    _f("tandem_media_stream_packets_lost_ratio", HISTOGRAM, "media", on_load=True),
    _f("tandem_media_stream_jitter_seconds", HISTOGRAM, "media", on_load=True),
    _f("tandem_media_stream_mos", HISTOGRAM, "media", on_load=True),
    _f("tandem_media_transcoded_packets_total", COUNTER, "media", ["from", "to"], on_load=True),
    _f("tandem_media_transcoded_streams_total", COUNTER, "media", ["from", "to"], on_load=True),
    _f("tandem_media_transcoding_streams", GAUGE, "media", ["from", "to"], on_load=True),
    _f("tandem_media_concealed_packets_total", COUNTER, "media", on_load=True),
    _f("tandem_media_dtmf_events_total", COUNTER, "media", ["conversion"], on_load=True),
    _f("tandem_media_draining", GAUGE, "media", on_load=True),
    # operator, admin :8080 (not part of the local platform)
    _f("tandem_operator_reconciles_total", COUNTER, "operator", ["kind", "result"]),
    _f("tandem_operator_reconcile_errors_total", COUNTER, "operator", ["kind", "reason"]),
    _f("tandem_operator_reconcile_duration_seconds", HISTOGRAM, "operator", ["kind"]),
    _f("tandem_operator_leader", GAUGE, "operator"),
    # every binary
    _f("tandem_build_info", GAUGE, "all", ["component", "version"], on_load=True),
)

# Standard cAdvisor metrics (kubelet) the capacity dashboard reads; absent outside Kubernetes.
CADVISOR: tuple[Family, ...] = (
    _f("container_cpu_usage_seconds_total", COUNTER, "cadvisor", ["container", "pod", "namespace"]),
    _f("container_memory_working_set_bytes", GAUGE, "cadvisor", ["container", "pod", "namespace"]),
)

# Labels Prometheus attaches to every scraped series: the scrape target's, and the ones the
# PodMonitors (or the local static config) add.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "gateway", "pod", "container"})


def by_series_name() -> dict[str, Family]:
    """Every stored sample name (histogram parts included) mapped to its family."""
    index: dict[str, Family] = {}
    for family in FAMILIES + CADVISOR:
        for name in family.series_names():
            index[name] = family
    return index


def allowed_labels(family: Family) -> frozenset[str]:
    """Labels a query may use on a family's series."""
    extra = {"le"} if family.kind == HISTOGRAM else set()
    return family.labels | TARGET_LABELS | extra | {"__name__"}
