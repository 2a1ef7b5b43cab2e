//! An ordered chain of stages run in one VM. Implemented for tuples of
//! stages, `(A,)` to `(A, B, C, D, E, F)`, with static dispatch: a chain
//! costs no boxing and no allocation per request beyond the stages' own.
//!
//! Config: a chain of one stage takes that stage's config as the whole
//! pluginConfig (`$`). A longer chain takes one object keyed by each stage's
//! [`Stage::CONFIG_KEY`]; errors name `$.<key>…`, and unknown keys are errors.

use meshguard_common::config::{parse_json_at, ConfigError, JsonPath};

use crate::host::{MetricsRegistry, Token};
use crate::message::{Request, Response};
use crate::stage::{Cx, LogView, Needs, Reply, RootCx, Stage, Step};

/// Stages run in order. Hooks take the stage's index.
pub trait Chain: Sized + 'static {
    /// Per-request data of every stage.
    type State: Default;
    const LEN: usize;

    /// Each stage's (name, config key), in order.
    fn names() -> Vec<(&'static str, &'static str)>;

    /// Parses the pluginConfig and builds every stage.
    fn build(config: &[u8], metrics: &mut dyn MetricsRegistry) -> Result<Self, ConfigError>;

    fn needs(&self, i: usize) -> Needs;
    fn owned_request_headers(&self, i: usize) -> &[std::rc::Rc<str>];
    fn private_request_headers(&self, i: usize) -> &[std::rc::Rc<str>];
    fn when_headers_unreadable(&self, i: usize) -> Step;
    fn on_request_headers(
        &self,
        i: usize,
        rq: &mut Request<'_>,
        st: &mut Self::State,
        cx: &mut Cx<'_>,
    ) -> Step;
    fn on_request_body(
        &self,
        i: usize,
        rq: &mut Request<'_>,
        st: &mut Self::State,
        cx: &mut Cx<'_>,
    ) -> Step;
    fn on_callout(
        &self,
        i: usize,
        reply: Reply<'_>,
        rq: &mut Request<'_>,
        st: &mut Self::State,
        cx: &mut Cx<'_>,
    ) -> Step;
    fn on_response_headers(
        &self,
        i: usize,
        rs: &mut Response<'_>,
        st: &mut Self::State,
        cx: &mut Cx<'_>,
    );
    fn on_log(&self, i: usize, log: &LogView<'_>, st: &Self::State, cx: &mut Cx<'_>);
    fn on_tick(&self, i: usize, cx: &mut RootCx<'_>);
    fn on_root_callout(&self, i: usize, token: Token, reply: Reply<'_>, cx: &mut RootCx<'_>);
}

/// Builds one stage from its section of the config.
pub fn build_stage<S: Stage>(
    value: serde_json::Value,
    at: &JsonPath,
    metrics: &mut dyn MetricsRegistry,
) -> Result<S, ConfigError> {
    let config = S::parse_config(value, at)?;
    S::build(config, at, metrics)
}

/// Splits a combined config into each stage's section, in chain order.
pub fn sections(
    config: &[u8],
    keys: &[(&'static str, &'static str)],
) -> Result<Vec<serde_json::Value>, ConfigError> {
    let root = JsonPath::root();
    let mut map = match parse_json_at(config, &root)? {
        serde_json::Value::Object(map) => map,
        _ => return Err(root.err("invalid type: expected a map of stage configs")),
    };
    if let Some(unknown) = map.keys().find(|k| !keys.iter().any(|(_, key)| key == k)) {
        let expected: Vec<&str> = keys.iter().map(|(_, k)| *k).collect();
        return Err(root.field(unknown).err(format!(
            "unknown stage `{unknown}`; this module runs {}",
            expected.join(", ")
        )));
    }
    keys.iter()
        .map(|(name, key)| {
            map.remove(*key).ok_or_else(|| {
                root.err(format!(
                    "missing field `{key}` (the config of the {name} stage)"
                ))
            })
        })
        .collect()
}

macro_rules! chain_tuple {
    ($len:expr; $($S:ident $i:tt),+) => {
        impl<$($S: Stage),+> Chain for ($($S,)+) {
            type State = ($($S::PerRequest,)+);
            const LEN: usize = $len;

            fn names() -> Vec<(&'static str, &'static str)> {
                vec![$(($S::NAME, $S::CONFIG_KEY)),+]
            }

            #[allow(unused_mut, unused_variables)]
            fn build(config: &[u8], metrics: &mut dyn MetricsRegistry) -> Result<Self, ConfigError> {
                if Self::LEN == 1 {
                    let value = parse_json_at(config, &JsonPath::root())?;
                    let mut one = Some(value);
                    return Ok(($(
                        build_stage::<$S>(one.take().unwrap_or_default(), &JsonPath::root(), metrics)?,
                    )+));
                }
                let mut parts = sections(config, &Self::names())?.into_iter();
                Ok(($(
                    build_stage::<$S>(
                        parts.next().unwrap_or_default(),
                        &JsonPath::root().field($S::CONFIG_KEY),
                        metrics,
                    )?,
                )+))
            }

            fn needs(&self, i: usize) -> Needs {
                match i { $($i => self.$i.needs(),)+ _ => Needs::default() }
            }
            fn owned_request_headers(&self, i: usize) -> &[std::rc::Rc<str>] {
                match i { $($i => self.$i.owned_request_headers(),)+ _ => &[] }
            }
            fn private_request_headers(&self, i: usize) -> &[std::rc::Rc<str>] {
                match i { $($i => self.$i.private_request_headers(),)+ _ => &[] }
            }
            fn when_headers_unreadable(&self, i: usize) -> Step {
                match i { $($i => self.$i.when_headers_unreadable(),)+ _ => Step::Continue }
            }
            fn on_request_headers(&self, i: usize, rq: &mut Request<'_>, st: &mut Self::State, cx: &mut Cx<'_>) -> Step {
                match i { $($i => self.$i.on_request_headers(rq, &mut st.$i, cx),)+ _ => Step::Continue }
            }
            fn on_request_body(&self, i: usize, rq: &mut Request<'_>, st: &mut Self::State, cx: &mut Cx<'_>) -> Step {
                match i { $($i => self.$i.on_request_body(rq, &mut st.$i, cx),)+ _ => Step::Continue }
            }
            fn on_callout(&self, i: usize, reply: Reply<'_>, rq: &mut Request<'_>, st: &mut Self::State, cx: &mut Cx<'_>) -> Step {
                match i { $($i => self.$i.on_callout(reply, rq, &mut st.$i, cx),)+ _ => Step::Continue }
            }
            fn on_response_headers(&self, i: usize, rs: &mut Response<'_>, st: &mut Self::State, cx: &mut Cx<'_>) {
                match i { $($i => self.$i.on_response_headers(rs, &mut st.$i, cx),)+ _ => {} }
            }
            fn on_log(&self, i: usize, log: &LogView<'_>, st: &Self::State, cx: &mut Cx<'_>) {
                match i { $($i => self.$i.on_log(log, &st.$i, cx),)+ _ => {} }
            }
            fn on_tick(&self, i: usize, cx: &mut RootCx<'_>) {
                match i { $($i => self.$i.on_tick(cx),)+ _ => {} }
            }
            fn on_root_callout(&self, i: usize, token: Token, reply: Reply<'_>, cx: &mut RootCx<'_>) {
                match i { $($i => self.$i.on_root_callout(token, reply, cx),)+ _ => {} }
            }
        }
    };
}

chain_tuple!(1; A 0);
chain_tuple!(2; A 0, B 1);
chain_tuple!(3; A 0, B 1, C 2);
chain_tuple!(4; A 0, B 1, C 2, D 3);
chain_tuple!(5; A 0, B 1, C 2, D 3, E 4);
chain_tuple!(6; A 0, B 1, C 2, D 3, E 4, F 5);
