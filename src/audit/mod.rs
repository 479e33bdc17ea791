//! Policy outside admission (docs/contract.md §11): `check` runs the webhook's decisions on manifests before
//! they reach a cluster, `audit` runs them on what already runs in one.
//!
//! Neither decides anything itself: each object goes to the same [`Validator`] and [`Mutator`]
//! that answer `/validate` and `/mutate` ([`decide`]), with identities from the same identity
//! layer ([`sources`]).
//!
//! - [`manifest`]: reading files, directories and stdin (YAML, JSON, `List`s), errors that name
//!   the file and document;
//! - [`check`]: one report per manifest object;
//! - [`render`]: text and JSON output;
//! - [`projection`]: what the audit keeps of each pod and workload (the decisions' view);
//! - [`run`]: the commands' wiring, on typed jobs (their flags are in `crate::cli`);
//! - [`repair`] and [`events`]: evictions of pods that got through without their identity, and
//!   the Events on the objects, for `audit --repair` and the controller.
//!
//! [`Validator`]: crate::admission::validate::Validator
//! [`Mutator`]: crate::admission::Mutator

pub mod check;
pub mod cluster;
pub mod decide;
pub mod events;
pub mod findings;
pub mod flow_depth;
pub mod manifest;
pub mod projection;
pub mod render;
pub mod repair;
pub mod run;
pub mod sources;
