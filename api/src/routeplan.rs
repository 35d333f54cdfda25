//! The `RoutePlan` custom resource: number routing for a Gateway — which inbound trunks it
//! serves, number translations, ordered routes (called/calling prefix, time of day) to weighted
//! trunk targets, failover response codes and the default action.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LocalObjectReference, check_rewrite, kubernetes_integers};
use crate::support;
use crate::trunk::{default_priority, default_weight};
use crate::validation::{self, FieldPath, Validate, ValidationErrors};

/// Response codes that move a call on to the next target when none are configured.
pub const DEFAULT_FAILOVER_CODES: [u16; 6] = [408, 480, 500, 502, 503, 504];

/// Desired state of a RoutePlan: how calls arriving on a Gateway are translated and routed.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
// Each printcolumn(...) repeats `type_`, which the lint mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "voice.tandem.dev",
    version = "v1alpha1",
    kind = "RoutePlan",
    namespaced,
    status = "RoutePlanStatus",
    derive = "PartialEq",
    shortname = "rp",
    category = "voice",
    doc = "A RoutePlan routes the calls arriving on a Gateway's trunks: number translations, longest-prefix and time-of-day routes to weighted trunk targets, failover and a default action.",
    printcolumn(
        name = "Gateway",
        type_ = "string",
        json_path = ".spec.gatewayRef.name",
        description = "Gateway the plan routes for"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the plan is in force"
    ),
    printcolumn(
        name = "Resolved",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="ResolvedRefs")].status"#,
        description = "Whether every referenced Trunk exists"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_integers)]
pub struct RoutePlanSpec {
    /// Gateway whose calls this plan routes.
    pub gateway_ref: LocalObjectReference,
    /// Names of the Trunks whose inbound calls this plan routes; every trunk of the Gateway
    /// when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 253), pattern(validation::DNS_SUBDOMAIN_PATTERN))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub inbound_trunks: Vec<String>,
    /// Number translations applied, in order, before routes are matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
    ))]
    pub translations: Vec<Translation>,
    /// Routes. Among those whose match applies, the longest `calledPrefix` routes the call
    /// (then the longest `callingPrefix`, then the earlier route).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
    ))]
    pub routes: Vec<Route>,
    /// Rate decks (prefix tables kept outside the plan, docs/ratedecks.md) that routes take
    /// their targets from, by least cost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
    ))]
    pub rate_decks: Vec<RateDeckSource>,
    /// Final response codes from a target that make the call try the next target.
    #[serde(default = "default_failover_codes")]
    #[schemars(length(max = 300), inner(range(min = 400, max = 699)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub failover_codes: Vec<u16>,
    /// What happens to a call no route matches.
    #[serde(default)]
    pub default_action: DefaultAction,
}

fn default_failover_codes() -> Vec<u16> {
    DEFAULT_FAILOVER_CODES.to_vec()
}

/// Which number a translation rewrites.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NumberField {
    /// The called number (Request-URI user part).
    Called,
    /// The calling number (From user part).
    Calling,
}

/// A number translation: when `pattern` matches the chosen number, its first match is replaced
/// by `replacement`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Translation {
    /// Translation name, unique within the plan.
    #[schemars(length(min = 1, max = 63), pattern(validation::DNS_LABEL_PATTERN))]
    pub name: String,
    /// Number the translation rewrites.
    pub field: NumberField,
    /// Regular expression (RE2/Rust `regex` syntax), e.g. `^00(\d+)$`.
    #[schemars(length(min = 1, max = 256))]
    pub pattern: String,
    /// Replacement text; `$1`, `${1}` or `${name}` insert capture groups and `$$` a literal `$`.
    #[schemars(length(max = 64))]
    pub replacement: String,
}

/// Where a rate deck is read from: a CSV file (docs/ratedecks.md).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateDeckSource {
    /// Deck name, unique within the plan; routes refer to it.
    #[schemars(length(min = 1, max = 63), pattern(validation::DNS_LABEL_PATTERN))]
    pub name: String,
    /// Path of the CSV file: relative to the configuration directory on the local platform,
    /// absolute in a pod (a mounted volume, e.g. a ConfigMap or a persistent volume). The file
    /// is re-read when it changes; a malformed version is refused and the previous one stays.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// One route: a match and the targets calls are sent to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.rateDeck) || (has(self.targets) && size(self.targets) > 0)",
        "message": "a route needs targets or a rateDeck",
    },
]))]
pub struct Route {
    /// Route name, unique within the plan.
    #[schemars(length(min = 1, max = 63), pattern(validation::DNS_LABEL_PATTERN))]
    pub name: String,
    /// Which calls the route applies to.
    #[serde(rename = "match", default)]
    pub matcher: RouteMatch,
    /// Rate deck (a name of `rateDecks`) whose longest prefix matching the called number gives
    /// the route's first targets, by cost, then priority, then weight; the route applies only
    /// to numbers the deck has a prefix for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(validation::DNS_LABEL_PATTERN))]
    pub rate_deck: Option<String>,
    /// Trunks the call is offered to, by priority then weight (after the rate deck's, when the
    /// route has one).
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(a, self.exists_one(b, b.trunkRef.name == a.trunkRef.name))",
            "message": "a trunk may appear only once among a route's targets",
        },
    ]))]
    pub targets: Vec<RouteTarget>,
}

/// Conditions a call must meet for a route to apply; all given conditions must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Prefix of the (translated) called number: an optional `+` then digits; empty matches
    /// every number.
    #[serde(default)]
    #[schemars(length(max = 32), pattern(validation::NUMBER_PREFIX_PATTERN))]
    pub called_prefix: String,
    /// Prefix of the (translated) calling number; any caller when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(validation::NUMBER_PREFIX_PATTERN))]
    pub calling_prefix: Option<String>,
    /// Time window in which the route applies; always when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_of_day: Option<TimeOfDay>,
}

/// A daily time window. When `end` is earlier than `start` the window runs past midnight into
/// the next day.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    { "rule": "self.start != self.end", "message": "start and end must differ" },
]))]
pub struct TimeOfDay {
    /// Start of the window, HH:MM (24-hour), inclusive.
    #[schemars(length(min = 5, max = 5), pattern(validation::CLOCK_TIME_PATTERN))]
    pub start: String,
    /// End of the window, HH:MM (24-hour), exclusive.
    #[schemars(length(min = 5, max = 5), pattern(validation::CLOCK_TIME_PATTERN))]
    pub end: String,
    /// Days on which the window starts; every day when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub days: Vec<Weekday>,
    /// IANA time zone the times are in, e.g. Europe/Paris; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: Option<String>,
}

/// A day of the week.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// The weekday as jiff counts it.
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        match self {
            Self::Mon => jiff::civil::Weekday::Monday,
            Self::Tue => jiff::civil::Weekday::Tuesday,
            Self::Wed => jiff::civil::Weekday::Wednesday,
            Self::Thu => jiff::civil::Weekday::Thursday,
            Self::Fri => jiff::civil::Weekday::Friday,
            Self::Sat => jiff::civil::Weekday::Saturday,
            Self::Sun => jiff::civil::Weekday::Sunday,
        }
    }
}

/// A trunk a route offers calls to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTarget {
    /// Trunk to send the call to; it must belong to the same Gateway.
    pub trunk_ref: LocalObjectReference,
    /// Selection priority; lower values are tried first.
    #[serde(default = "default_priority")]
    #[schemars(range(min = 0, max = 65535))]
    pub priority: u16,
    /// Relative share of calls among targets of the same priority.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 0, max = 65535))]
    pub weight: u16,
}

/// What happens to a call no route matches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefaultAction {
    /// Reject the call with this final response.
    #[serde(default)]
    pub reject: RejectAction,
}

/// A final SIP response rejecting the call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectAction {
    /// SIP response code.
    #[serde(default = "default_reject_code")]
    #[schemars(range(min = 400, max = 699))]
    pub code: u16,
    /// SIP reason phrase.
    #[serde(default = "default_reject_reason")]
    #[schemars(length(min = 1, max = 128), pattern(validation::REASON_PHRASE_PATTERN))]
    pub reason: String,
}

impl Default for RejectAction {
    fn default() -> Self {
        Self {
            code: default_reject_code(),
            reason: default_reject_reason(),
        }
    }
}

fn default_reject_code() -> u16 {
    404
}

fn default_reject_reason() -> String {
    "No Route".to_owned()
}

/// Observed state of a RoutePlan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutePlanStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current conditions: `ResolvedRefs` (every referenced Trunk exists), `Accepted` (the
    /// spec is valid) and `Ready` (the plan is in force on the Gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["type"],
    ))]
    pub conditions: Vec<Condition>,
}

impl Validate for RoutePlanSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        validation::validate_spec(|path, errors| self.check(path, errors))
    }
}

impl Validate for RoutePlan {
    fn validate(&self) -> Result<(), ValidationErrors> {
        validation::validate_object(self.metadata.name.as_deref(), |path, errors| {
            self.spec.check(path, errors)
        })
    }
}

impl RoutePlanSpec {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        self.gateway_ref.check(&path.field("gatewayRef"), errors);

        let inbound = path.field("inboundTrunks");
        for (i, name) in self.inbound_trunks.iter().enumerate() {
            errors.check(&inbound.index(i), validation::object_name(name));
        }
        validation::duplicates(
            errors,
            &inbound,
            &self.inbound_trunks,
            |n| n.as_str(),
            "trunk",
        );

        let translations = path.field("translations");
        if self.translations.len() > 64 {
            errors.push(&translations, "at most 64 translations are allowed");
        }
        for (i, translation) in self.translations.iter().enumerate() {
            let item = translations.index(i);
            errors.check(
                &item.field("name"),
                validation::dns_label(&translation.name),
            );
            check_rewrite(
                &translation.pattern,
                &translation.replacement,
                &item,
                errors,
            );
        }
        validation::duplicates(
            errors,
            &translations,
            &self.translations,
            |t| t.name.as_str(),
            "translation name",
        );

        let routes = path.field("routes");
        if self.routes.len() > 1024 {
            errors.push(&routes, "at most 1024 routes are allowed");
        }
        for (i, route) in self.routes.iter().enumerate() {
            route.check(&routes.index(i), errors);
            if let Some(deck) = &route.rate_deck
                && !self.rate_decks.iter().any(|d| &d.name == deck)
            {
                errors.push(
                    &routes.index(i).field("rateDeck"),
                    format!("no rate deck named {deck:?} in rateDecks"),
                );
            }
        }

        let decks = path.field("rateDecks");
        if self.rate_decks.len() > 16 {
            errors.push(&decks, "at most 16 rate decks are allowed");
        }
        for (i, deck) in self.rate_decks.iter().enumerate() {
            let item = decks.index(i);
            errors.check(&item.field("name"), validation::dns_label(&deck.name));
            if deck.path.is_empty() || deck.path.len() > 4096 || deck.path.contains('\0') {
                errors.push(
                    &item.field("path"),
                    "must be a file path of 1 to 4096 characters",
                );
            }
        }
        validation::duplicates(
            errors,
            &decks,
            &self.rate_decks,
            |d| d.name.as_str(),
            "rate deck name",
        );
        validation::duplicates(
            errors,
            &routes,
            &self.routes,
            |r| r.name.as_str(),
            "route name",
        );

        let codes = path.field("failoverCodes");
        for (i, code) in self.failover_codes.iter().enumerate() {
            if !(400..=699).contains(code) {
                errors.push(
                    &codes.index(i),
                    format!("{code} is not a final error response code (400-699)"),
                );
            }
        }
        validation::duplicates(errors, &codes, &self.failover_codes, |c| *c, "code");

        let reject = path.field("defaultAction").field("reject");
        if !(400..=699).contains(&self.default_action.reject.code) {
            errors.push(
                &reject.field("code"),
                format!(
                    "{} is not a final error response code (400-699)",
                    self.default_action.reject.code
                ),
            );
        }
        errors.check(
            &reject.field("reason"),
            validation::reason_phrase(&self.default_action.reject.reason),
        );
        support::check("RoutePlan", self, path, errors);
    }
}

impl Route {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        errors.check(&path.field("name"), validation::dns_label(&self.name));
        let matcher = path.field("match");
        errors.check(
            &matcher.field("calledPrefix"),
            validation::number_prefix(&self.matcher.called_prefix),
        );
        if let Some(prefix) = &self.matcher.calling_prefix {
            errors.check(
                &matcher.field("callingPrefix"),
                validation::number_prefix(prefix),
            );
        }
        if let Some(window) = &self.matcher.time_of_day {
            window.check(&matcher.field("timeOfDay"), errors);
        }

        let targets = path.field("targets");
        if self.targets.is_empty() && self.rate_deck.is_none() {
            errors.push(&targets, "at least one target is required (or a rateDeck)");
        }
        if self.targets.len() > 16 {
            errors.push(&targets, "at most 16 targets are allowed");
        }
        for (i, target) in self.targets.iter().enumerate() {
            target
                .trunk_ref
                .check(&targets.index(i).field("trunkRef"), errors);
        }
        validation::duplicates(
            errors,
            &targets,
            &self.targets,
            |t| t.trunk_ref.name.as_str(),
            "target trunk",
        );
    }
}

impl TimeOfDay {
    fn check(&self, path: &FieldPath, errors: &mut ValidationErrors) {
        let start = validation::clock_time(&self.start);
        let end = validation::clock_time(&self.end);
        if let Err(message) = &start {
            errors.push(&path.field("start"), message.clone());
        }
        if let Err(message) = &end {
            errors.push(&path.field("end"), message.clone());
        }
        if let (Ok(start), Ok(end)) = (start, end)
            && start == end
        {
            errors.push(&path.field("end"), "start and end must differ");
        }
        validation::duplicates(
            errors,
            &path.field("days"),
            &self.days,
            |d| format!("{d:?}"),
            "day",
        );
        if let Some(zone) = &self.timezone
            && let Err(message) = validation::time_zone(zone)
        {
            errors.push(&path.field("timezone"), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(trunk: &str) -> RouteTarget {
        RouteTarget {
            trunk_ref: LocalObjectReference::new(trunk),
            priority: 1,
            weight: 100,
        }
    }

    fn route(name: &str, prefix: &str) -> Route {
        Route {
            name: name.into(),
            matcher: RouteMatch {
                called_prefix: prefix.into(),
                ..RouteMatch::default()
            },
            rate_deck: None,
            targets: vec![target("carrier")],
        }
    }

    fn plan(routes: Vec<Route>) -> RoutePlanSpec {
        RoutePlanSpec {
            gateway_ref: LocalObjectReference::new("edge"),
            inbound_trunks: Vec::new(),
            translations: Vec::new(),
            routes,
            rate_decks: Vec::new(),
            failover_codes: default_failover_codes(),
            default_action: DefaultAction::default(),
        }
    }

    fn messages(spec: &RoutePlanSpec) -> Vec<String> {
        spec.validate()
            .unwrap_err()
            .into_errors()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn empty_prefix_routes_everything() {
        assert_eq!(plan(vec![route("everything", "")]).validate(), Ok(()));
    }

    #[test]
    fn prefixes_are_digits() {
        assert_eq!(
            messages(&plan(vec![route("a", "+44"), route("b", "44x")])),
            [
                "spec.routes[1].match.calledPrefix: \"44x\" is not a number prefix: an optional leading '+' followed by digits"
            ]
        );
    }

    #[test]
    fn targets_are_required_and_distinct() {
        let mut empty = route("nowhere", "1");
        empty.targets.clear();
        let mut twice = route("twice", "2");
        twice.targets.push(target("carrier"));
        assert_eq!(
            messages(&plan(vec![empty, twice])),
            [
                "spec.routes[0].targets: at least one target is required (or a rateDeck)",
                "spec.routes[1].targets[1]: duplicate target trunk carrier (already used by spec.routes[1].targets[0])",
            ]
        );
    }

    #[test]
    fn deck_routes_name_a_deck_of_the_plan() {
        let mut lcr = route("lcr", "+");
        lcr.targets.clear();
        lcr.rate_deck = Some("wholesale".into());
        let mut spec = plan(vec![lcr]);
        assert_eq!(
            messages(&spec),
            ["spec.routes[0].rateDeck: no rate deck named \"wholesale\" in rateDecks"]
        );
        let deck = |name: &str, path: &str| RateDeckSource {
            name: name.into(),
            path: path.into(),
        };
        spec.rate_decks = vec![deck("wholesale", "decks/wholesale.csv")];
        assert_eq!(spec.validate(), Ok(()), "a deck route needs no targets");
        spec.rate_decks.push(deck("wholesale", ""));
        assert_eq!(
            messages(&spec),
            [
                "spec.rateDecks[1].path: must be a file path of 1 to 4096 characters",
                "spec.rateDecks[1]: duplicate rate deck name wholesale (already used by spec.rateDecks[0])",
            ]
        );
    }

    #[test]
    fn time_windows() {
        let mut business = route("business", "");
        business.matcher.time_of_day = Some(TimeOfDay {
            start: "09:00".into(),
            end: "09:00".into(),
            days: vec![Weekday::Mon, Weekday::Mon],
            timezone: Some("Europe/Atlantis".into()),
        });
        assert_eq!(
            messages(&plan(vec![business])),
            [
                "spec.routes[0].match.timeOfDay.end: start and end must differ",
                "spec.routes[0].match.timeOfDay.days[1]: duplicate day Mon (already used by spec.routes[0].match.timeOfDay.days[0])",
                "spec.routes[0].match.timeOfDay.timezone: \"Europe/Atlantis\" is not a known IANA time zone name (e.g. Europe/Paris)",
            ]
        );
    }

    #[test]
    fn failover_and_reject_codes_are_final_errors() {
        let mut spec = plan(Vec::new());
        spec.failover_codes = vec![503, 302, 503];
        spec.default_action.reject = RejectAction {
            code: 200,
            reason: "OK\r\nX: y".into(),
        };
        assert_eq!(
            messages(&spec),
            [
                "spec.failoverCodes[1]: 302 is not a final error response code (400-699)",
                "spec.failoverCodes[2]: duplicate code 503 (already used by spec.failoverCodes[0])",
                "spec.defaultAction.reject.code: 200 is not a final error response code (400-699)",
                "spec.defaultAction.reject.reason: must not contain line breaks",
            ]
        );
    }
}
