//! pod-identity-webhook: a Kubernetes admission webhook that gives pods AWS credentials through
//! EKS Pod Identity associations (or IRSA annotations), exactly as EKS does, and enforces which
//! workloads may run without one.
//!
//! Layout:
//! - [`identity`]: where identities come from (associations file, EKS, ServiceAccounts); no HTTP.
//! - [`admission`]: the AdmissionReview protocol and the decisions (pure mutation, policy).
//! - [`policy`]: the identity policy (modes, exemptions, verdicts); [`namespaces`]: its labels.
//! - [`object`]: serde views of the objects both read (pods, workloads, ServiceAccounts).
//! - [`server`]: routes, listeners with their limits and timeouts, TLS with reloadable certificates.
//! - [`startup`]: wiring settings into a running webhook, one small step at a time.
//! - [`cli`]: one file per command (flags, typed settings); the one runtime and the logging.
//! - [`kubernetes`]: the one Kubernetes client constructor and the one reflector loop.
//! - [`telemetry`]: logging setup and the metrics registry.
//! - [`shown`]: the one way output repeats a value (escaped, long ones cut with their length).

pub mod admission;
pub mod agent;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod files;
pub mod identity;
pub mod issuer;
pub mod kubernetes;
pub mod live_config;
pub mod migrate;
pub mod namespaces;
pub mod object;
pub mod policy;
pub mod reload;
pub mod serde_errors;
pub mod server;
pub mod settings;
pub mod shown;
pub mod startup;
pub mod telemetry;
