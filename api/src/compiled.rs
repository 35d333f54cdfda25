//! Compiled views of validated resources: regular expressions compiled once, CIDRs parsed, time
//! windows resolved to a time zone, so that signaling does no parsing per call. Each view derefs
//! to the resource it was built from.

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use ipnet::IpNet;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use regex::Regex;

use crate::common::NumberRewrite;
use crate::ratedeck::{DeckMatch, RateDeck};
use crate::routeplan::{NumberField, Route, RoutePlan, TimeOfDay, Translation, Weekday};
use crate::trunk::{HeaderAction, HeaderDirection, HeaderRule, Trunk};
use crate::validation::{self, FieldPath, Validate, ValidationErrors};

/// A compiled pattern/replacement pair.
#[derive(Debug, Clone)]
pub struct CompiledRewrite {
    pattern: Regex,
    replacement: String,
}

impl CompiledRewrite {
    /// Compiles a rewrite, checking the pattern and the groups the replacement refers to.
    pub fn new(pattern: &str, replacement: &str) -> Result<Self, String> {
        let regex = validation::user_regex(pattern)?;
        validation::replacement_groups(replacement, &regex)?;
        Ok(Self {
            pattern: regex,
            replacement: replacement.to_owned(),
        })
    }

    /// The compiled pattern.
    pub fn pattern(&self) -> &Regex {
        &self.pattern
    }

    /// The replacement template.
    pub fn replacement(&self) -> &str {
        &self.replacement
    }

    /// Replaces the first match of the pattern in `number`; `None` when it does not match.
    pub fn apply(&self, number: &str) -> Option<String> {
        let captures = self.pattern.captures(number)?;
        let whole = captures.get(0)?;
        let mut rewritten = String::with_capacity(number.len() + self.replacement.len());
        rewritten.push_str(&number[..whole.start()]);
        captures.expand(&self.replacement, &mut rewritten);
        rewritten.push_str(&number[whole.end()..]);
        Some(rewritten)
    }

    /// Applies `rules` in order, each to the result of the previous one.
    pub fn apply_all<'n>(rules: &[CompiledRewrite], number: &'n str) -> Cow<'n, str> {
        let mut current = Cow::Borrowed(number);
        for rule in rules {
            if let Some(rewritten) = rule.apply(&current) {
                current = Cow::Owned(rewritten);
            }
        }
        current
    }
}

impl TryFrom<&NumberRewrite> for CompiledRewrite {
    type Error = String;

    fn try_from(rule: &NumberRewrite) -> Result<Self, String> {
        Self::new(&rule.pattern, &rule.replacement)
    }
}

/// A validated Trunk with its ACL parsed and its number normalisation compiled.
#[derive(Debug, Clone)]
pub struct CompiledTrunk {
    trunk: Trunk,
    allowed_cidrs: Vec<IpNet>,
    peer_addresses: Vec<IpAddr>,
    called: Vec<CompiledRewrite>,
    calling: Vec<CompiledRewrite>,
    header_rules: Option<HeaderRules>,
}

/// A Trunk's header rules, compiled and shared by every call on the trunk; two are equal when
/// they are the same compilation.
#[derive(Debug, Clone)]
pub struct HeaderRules(Arc<[CompiledHeaderRule]>);

impl PartialEq for HeaderRules {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for HeaderRules {}

impl Deref for HeaderRules {
    type Target = [CompiledHeaderRule];

    fn deref(&self) -> &[CompiledHeaderRule] {
        &self.0
    }
}

/// One header rule with its `match` compiled.
#[derive(Debug, Clone)]
pub struct CompiledHeaderRule {
    pub action: HeaderAction,
    pub header: String,
    pub value: Option<String>,
    /// The `match` pattern with the Set value as its replacement.
    pub matches: Option<CompiledRewrite>,
    pub direction: HeaderDirection,
}

impl CompiledHeaderRule {
    /// Compiles a rule the Trunk's validation accepted.
    fn new(rule: &HeaderRule) -> Result<Self, String> {
        let replacement = match rule.action {
            HeaderAction::Set => rule.value.as_deref().unwrap_or_default(),
            _ => "",
        };
        let matches = rule
            .matches
            .as_deref()
            .map(|pattern| CompiledRewrite::new(pattern, replacement))
            .transpose()?;
        Ok(Self {
            action: rule.action,
            header: rule.header.clone(),
            value: rule.value.clone(),
            matches,
            direction: rule.direction,
        })
    }
}

impl CompiledTrunk {
    /// Validates and compiles `trunk`.
    pub fn new(trunk: Trunk) -> Result<Self, ValidationErrors> {
        trunk.validate()?;
        let mut errors = ValidationErrors::new();
        let spec = FieldPath::root("spec");

        let cidrs = spec.field("inbound").field("allowedCidrs");
        let mut allowed_cidrs = Vec::new();
        for (i, text) in trunk
            .spec
            .inbound
            .iter()
            .flat_map(|inbound| inbound.allowed_cidrs.iter())
            .enumerate()
        {
            match validation::cidr(text) {
                Ok(net) => allowed_cidrs.push(net),
                Err(message) => errors.push(&cidrs.index(i), message),
            }
        }

        let normalization = spec.field("numberNormalization");
        let (called, calling) = match &trunk.spec.number_normalization {
            Some(rules) => (
                compile_rules(&rules.called, &normalization.field("called"), &mut errors),
                compile_rules(&rules.calling, &normalization.field("calling"), &mut errors),
            ),
            None => (Vec::new(), Vec::new()),
        };

        let peer_addresses = trunk
            .spec
            .peers
            .iter()
            .filter_map(|peer| peer.host.parse().ok())
            .collect();

        let rules_path = spec.field("headerRules");
        let mut header_rules = Vec::with_capacity(trunk.spec.header_rules.len());
        for (i, rule) in trunk.spec.header_rules.iter().enumerate() {
            match CompiledHeaderRule::new(rule) {
                Ok(rule) => header_rules.push(rule),
                Err(message) => errors.push(&rules_path.index(i).field("match"), message),
            }
        }
        let header_rules = (!header_rules.is_empty()).then(|| HeaderRules(header_rules.into()));

        errors.into_result()?;
        Ok(Self {
            trunk,
            allowed_cidrs,
            peer_addresses,
            called,
            calling,
            header_rules,
        })
    }

    /// The resource.
    pub fn trunk(&self) -> &Trunk {
        &self.trunk
    }

    /// The Trunk's name.
    pub fn name(&self) -> &str {
        self.trunk.metadata.name.as_deref().unwrap_or_default()
    }

    /// The Trunk's namespace (`default` when the manifest gave none).
    pub fn namespace(&self) -> &str {
        self.trunk
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(crate::DEFAULT_NAMESPACE)
    }

    /// The allowed source networks.
    pub fn allowed_cidrs(&self) -> &[IpNet] {
        &self.allowed_cidrs
    }

    /// Whether a request from `source` is admitted: it comes from a peer given as an IP address
    /// or from an allowed CIDR. Peers given by host name are matched by the caller against
    /// their resolved addresses.
    pub fn admits(&self, source: IpAddr) -> bool {
        let source = canonical(source);
        self.peer_addresses
            .iter()
            .any(|peer| canonical(*peer) == source)
            || self.allowed_cidrs.iter().any(|net| net.contains(&source))
    }

    /// The digest realm of inbound challenges (`inbound.auth.realm`, else the Trunk's name)
    /// and the Secret with the credentials callers must present, when inbound auth is on.
    pub fn inbound_auth(&self) -> Option<(&str, &str)> {
        let auth = self.trunk.spec.inbound.as_ref()?.auth.as_ref()?;
        let realm = auth.realm.as_deref().unwrap_or(self.name());
        Some((realm, auth.secret_ref.name.as_str()))
    }

    /// The Secret with the credentials answering the peers' challenges, when set.
    pub fn outbound_secret(&self) -> Option<&str> {
        let auth = self.trunk.spec.outbound.as_ref()?.auth.as_ref()?;
        Some(auth.secret_ref.name.as_str())
    }

    /// The trunk's registration, when enabled and complete (validation refuses an enabled one
    /// without registrar).
    pub fn registration(&self) -> Option<&crate::trunk::Registration> {
        self.trunk
            .spec
            .outbound
            .as_ref()?
            .registration
            .as_ref()
            .filter(|r| r.enabled && r.registrar.is_some())
    }

    /// The host of the From URI of requests sent to the trunk (`outbound.fromDomain`).
    pub fn from_domain(&self) -> Option<&str> {
        self.trunk.spec.outbound.as_ref()?.from_domain.as_deref()
    }

    /// The Secrets this Trunk refers to.
    pub fn secret_refs(&self) -> impl Iterator<Item = &str> {
        self.inbound_auth()
            .map(|(_, secret)| secret)
            .into_iter()
            .chain(self.outbound_secret())
    }

    /// Whether the Trunk's peers are in the trust domain (`identity.trusted`, RFC 3325).
    pub fn trusted(&self) -> bool {
        self.trunk.spec.identity.as_ref().is_some_and(|i| i.trusted)
    }

    /// The header rules, in order; `None` when the Trunk has none.
    pub fn header_rules(&self) -> Option<&HeaderRules> {
        self.header_rules.as_ref()
    }

    /// Applies the called-number normalisation.
    pub fn normalize_called<'n>(&self, number: &'n str) -> Cow<'n, str> {
        CompiledRewrite::apply_all(&self.called, number)
    }

    /// Applies the calling-number normalisation.
    pub fn normalize_calling<'n>(&self, number: &'n str) -> Cow<'n, str> {
        CompiledRewrite::apply_all(&self.calling, number)
    }
}

impl Deref for CompiledTrunk {
    type Target = Trunk;

    fn deref(&self) -> &Trunk {
        &self.trunk
    }
}

/// IPv4-mapped IPv6 sources (dual-stack sockets) compare as the IPv4 address they carry.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn compile_rules(
    rules: &[NumberRewrite],
    path: &FieldPath,
    errors: &mut ValidationErrors,
) -> Vec<CompiledRewrite> {
    let mut compiled = Vec::with_capacity(rules.len());
    for (i, rule) in rules.iter().enumerate() {
        match CompiledRewrite::try_from(rule) {
            Ok(rewrite) => compiled.push(rewrite),
            Err(message) => errors.push(&path.index(i), message),
        }
    }
    compiled
}

/// A compiled number translation of a RoutePlan.
#[derive(Debug, Clone)]
pub struct CompiledTranslation {
    name: String,
    field: NumberField,
    rewrite: CompiledRewrite,
}

impl CompiledTranslation {
    fn new(translation: &Translation) -> Result<Self, String> {
        Ok(Self {
            name: translation.name.clone(),
            field: translation.field,
            rewrite: CompiledRewrite::new(&translation.pattern, &translation.replacement)?,
        })
    }

    /// The translation's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number it rewrites.
    pub fn field(&self) -> NumberField {
        self.field
    }

    /// The compiled rewrite.
    pub fn rewrite(&self) -> &CompiledRewrite {
        &self.rewrite
    }
}

/// A route's time window resolved against its time zone.
#[derive(Debug, Clone)]
pub struct TimeWindow {
    start_minute: u16,
    end_minute: u16,
    days: Vec<jiff::civil::Weekday>,
    zone: TimeZone,
}

impl TimeWindow {
    /// Resolves a `timeOfDay` block.
    pub fn new(window: &TimeOfDay) -> Result<Self, String> {
        let start_minute = validation::clock_time(&window.start)?;
        let end_minute = validation::clock_time(&window.end)?;
        if start_minute == end_minute {
            return Err("start and end must differ".to_owned());
        }
        let zone = match &window.timezone {
            Some(name) => validation::time_zone(name)?,
            None => TimeZone::UTC,
        };
        Ok(Self {
            start_minute,
            end_minute,
            days: window.days.iter().map(|d| Weekday::to_jiff(*d)).collect(),
            zone,
        })
    }

    /// Whether the window is open at `now`.
    pub fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned(self.zone.clone());
        let minute =
            u16::from(local.hour().unsigned_abs()) * 60 + u16::from(local.minute().unsigned_abs());
        let today = local.weekday();
        let day_allowed = |day| self.days.is_empty() || self.days.contains(&day);
        if self.start_minute < self.end_minute {
            day_allowed(today) && (self.start_minute..self.end_minute).contains(&minute)
        } else {
            // The window crosses midnight; its early-morning part belongs to the window that
            // opened the day before.
            (minute >= self.start_minute && day_allowed(today))
                || (minute < self.end_minute && day_allowed(today.previous()))
        }
    }
}

/// A validated RoutePlan with its translations compiled and time windows resolved.
#[derive(Debug, Clone)]
pub struct CompiledRoutePlan {
    plan: RoutePlan,
    translations: Vec<CompiledTranslation>,
    /// One entry per route, `None` for routes without a time window.
    windows: Vec<Option<TimeWindow>>,
    /// One entry per `rateDecks` item, `None` until the deck is loaded.
    decks: Vec<Option<Arc<RateDeck>>>,
}

impl CompiledRoutePlan {
    /// Validates and compiles `plan`.
    pub fn new(plan: RoutePlan) -> Result<Self, ValidationErrors> {
        plan.validate()?;
        let mut errors = ValidationErrors::new();
        let spec = FieldPath::root("spec");

        let translations_path = spec.field("translations");
        let mut translations = Vec::with_capacity(plan.spec.translations.len());
        for (i, translation) in plan.spec.translations.iter().enumerate() {
            match CompiledTranslation::new(translation) {
                Ok(compiled) => translations.push(compiled),
                Err(message) => errors.push(&translations_path.index(i), message),
            }
        }

        let routes_path = spec.field("routes");
        let mut windows = Vec::with_capacity(plan.spec.routes.len());
        for (i, route) in plan.spec.routes.iter().enumerate() {
            match route.matcher.time_of_day.as_ref().map(TimeWindow::new) {
                None => windows.push(None),
                Some(Ok(window)) => windows.push(Some(window)),
                Some(Err(message)) => errors.push(
                    &routes_path.index(i).field("match").field("timeOfDay"),
                    message,
                ),
            }
        }

        errors.into_result()?;
        let decks = vec![None; plan.spec.rate_decks.len()];
        Ok(Self {
            plan,
            translations,
            windows,
            decks,
        })
    }

    /// The resource.
    pub fn plan(&self) -> &RoutePlan {
        &self.plan
    }

    /// The RoutePlan's name.
    pub fn name(&self) -> &str {
        self.plan.metadata.name.as_deref().unwrap_or_default()
    }

    /// The RoutePlan's namespace (`default` when the manifest gave none).
    pub fn namespace(&self) -> &str {
        self.plan
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(crate::DEFAULT_NAMESPACE)
    }

    /// The compiled translations, in order.
    pub fn translations(&self) -> &[CompiledTranslation] {
        &self.translations
    }

    /// Runs the translations over a call's numbers; returns the translated (called, calling).
    pub fn translate<'n>(&self, called: &'n str, calling: &'n str) -> (Cow<'n, str>, Cow<'n, str>) {
        let mut called = Cow::Borrowed(called);
        let mut calling = Cow::Borrowed(calling);
        for translation in &self.translations {
            let number = match translation.field {
                NumberField::Called => &mut called,
                NumberField::Calling => &mut calling,
            };
            if let Some(rewritten) = translation.rewrite.apply(number) {
                *number = Cow::Owned(rewritten);
            }
        }
        (called, calling)
    }

    /// The time window of the route at `index`, if it has one.
    pub fn window(&self, index: usize) -> Option<&TimeWindow> {
        self.windows.get(index).and_then(Option::as_ref)
    }

    /// Puts the deck called `name` (a `rateDecks` item) in force; `false` when the plan has no
    /// such deck.
    pub fn set_rate_deck(&mut self, name: &str, deck: Arc<RateDeck>) -> bool {
        let index = self
            .plan
            .spec
            .rate_decks
            .iter()
            .position(|d| d.name == name);
        match index {
            Some(i) => {
                self.decks[i] = Some(deck);
                true
            }
            None => false,
        }
    }

    /// The deck called `name`, when it is loaded.
    pub fn rate_deck(&self, name: &str) -> Option<&Arc<RateDeck>> {
        let i = self
            .plan
            .spec
            .rate_decks
            .iter()
            .position(|d| d.name == name)?;
        self.decks[i].as_ref()
    }

    /// The longest prefix of `route`'s rate deck matching `called`; `None` when the route has
    /// no deck, its deck is not loaded, or no prefix matches.
    pub fn deck_match(&self, route: &Route, called: &str) -> Option<DeckMatch<'_>> {
        self.rate_deck(route.rate_deck.as_deref()?)?.lookup(called)
    }

    /// Whether route `index` applies to a call with these (translated) numbers at `now`. A route
    /// with a rate deck applies only to numbers the deck has a prefix for.
    pub fn route_matches(&self, index: usize, called: &str, calling: &str, now: Timestamp) -> bool {
        let Some(route) = self.plan.spec.routes.get(index) else {
            return false;
        };
        let criteria = &route.matcher;
        called.starts_with(criteria.called_prefix.as_str())
            && criteria
                .calling_prefix
                .as_deref()
                .is_none_or(|prefix| calling.starts_with(prefix))
            && self.window(index).is_none_or(|window| window.contains(now))
            && (route.rate_deck.is_none() || self.deck_match(route, called).is_some())
    }

    /// The route for a call with these (translated) numbers at `now`: among the routes that
    /// apply, the longest `calledPrefix` wins, then the longest `callingPrefix`, then the
    /// earlier route in the plan.
    pub fn select_route(&self, called: &str, calling: &str, now: Timestamp) -> Option<&Route> {
        let routes = &self.plan.spec.routes;
        (0..routes.len())
            .filter(|&i| self.route_matches(i, called, calling, now))
            .max_by_key(|&i| {
                let criteria = &routes[i].matcher;
                (
                    criteria.called_prefix.len(),
                    criteria.calling_prefix.as_deref().map_or(0, str::len),
                    std::cmp::Reverse(i),
                )
            })
            .and_then(|i| routes.get(i))
    }

    /// Whether this plan routes inbound calls from the trunk called `trunk`.
    pub fn serves_trunk(&self, trunk: &str) -> bool {
        self.plan.spec.inbound_trunks.is_empty()
            || self.plan.spec.inbound_trunks.iter().any(|t| t == trunk)
    }
}

impl Deref for CompiledRoutePlan {
    type Target = RoutePlan;

    fn deref(&self) -> &RoutePlan {
        &self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().unwrap()
    }

    #[test]
    fn rewrites_replace_the_first_match_only() {
        let national = CompiledRewrite::new(r"^0(\d+)$", "+44$1").unwrap();
        assert_eq!(
            national.apply("02079460000").as_deref(),
            Some("+442079460000")
        );
        assert_eq!(national.apply("+442079460000"), None);
        let strip = CompiledRewrite::new("-", "").unwrap();
        assert_eq!(strip.apply("1-2-3").as_deref(), Some("12-3"));
        let chain = [
            CompiledRewrite::new(r"^00", "+").unwrap(),
            CompiledRewrite::new(r"^\+1", "1").unwrap(),
        ];
        assert_eq!(
            CompiledRewrite::apply_all(&chain, "0012125550100"),
            "12125550100"
        );
        assert!(matches!(
            CompiledRewrite::apply_all(&chain, "911"),
            Cow::Borrowed("911")
        ));
        assert!(CompiledRewrite::new("(", "").is_err());
        assert!(CompiledRewrite::new("^0", "$1").is_err());
    }

    #[test]
    fn daytime_window() {
        let window = TimeWindow::new(&TimeOfDay {
            start: "09:00".into(),
            end: "17:30".into(),
            days: vec![Weekday::Mon, Weekday::Fri],
            timezone: Some("Europe/Paris".into()),
        })
        .unwrap();
        // 2025-01-06 is a Monday; Paris is UTC+1 in winter.
        assert!(window.contains(at("2025-01-06T08:00:00Z")));
        assert!(!window.contains(at("2025-01-06T07:59:59Z")));
        assert!(window.contains(at("2025-01-06T16:29:59Z")));
        assert!(!window.contains(at("2025-01-06T16:30:00Z")));
        // Tuesday is not listed.
        assert!(!window.contains(at("2025-01-07T10:00:00Z")));
        // Summer time: UTC+2.
        assert!(window.contains(at("2025-07-04T07:00:00Z")));
    }

    #[test]
    fn overnight_window_belongs_to_the_day_it_opens() {
        let window = TimeWindow::new(&TimeOfDay {
            start: "22:00".into(),
            end: "06:00".into(),
            days: vec![Weekday::Fri],
            timezone: None,
        })
        .unwrap();
        // Friday night and the small hours of Saturday.
        assert!(window.contains(at("2025-01-10T23:00:00Z")));
        assert!(window.contains(at("2025-01-11T05:59:00Z")));
        // Friday early morning belongs to Thursday's window, which is not listed.
        assert!(!window.contains(at("2025-01-10T03:00:00Z")));
        assert!(!window.contains(at("2025-01-11T06:00:00Z")));
        assert!(!window.contains(at("2025-01-11T22:30:00Z")));
    }
}
