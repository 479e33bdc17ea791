//! Runs `agent`, `agent setup-link` and `agent trust-policy` (main.rs calls [`run`]).

use super::args::{AgentAction, AgentArgs, LinkArgs, TrustArgs};
use super::sts::{AwsSts, StsSettings};
use super::trust;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("invalid arguments: {0} (see `pod-identity-webhook agent --help`)")]
    Args(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Start(#[from] super::AgentStartError),
    #[cfg(target_os = "linux")]
    #[error("setup-link: {0}")]
    Link(#[from] super::link::LinkError),
    #[error("setup-link works on Linux only")]
    NotLinux,
    #[error("cannot tell the agent's principal (give --agent-principal): {0}")]
    Principal(String),
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CommandError::Runtime)
}

pub fn run(args: AgentArgs) -> Result<(), CommandError> {
    match args.action {
        Some(AgentAction::SetupLink(link)) => {
            let _log = crate::telemetry::logging::init(link.log_format);
            runtime()?.block_on(setup_link(&link))
        }
        Some(AgentAction::TrustPolicy(t)) => runtime()?.block_on(trust_policy(&t)),
        None => {
            let settings = args.run.settings().map_err(CommandError::Args)?;
            let _log = crate::telemetry::logging::init(args.run.log_format);
            let link = args.run.setup_link.then(|| LinkArgs {
                interface: super::link_name().into(),
                ipv4: "169.254.170.23".parse().expect("valid"),
                ipv6: "fd00:ec2::23".parse().expect("valid"),
                no_ipv6: false,
                log_format: args.run.log_format,
            });
            runtime()?.block_on(async {
                if let Some(link) = link {
                    setup_link(&link).await?;
                }
                let running = super::start(settings).await?;
                running.run_until(crate::startup::shutdown_signal()).await;
                Ok(())
            })
        }
    }
}

#[cfg(target_os = "linux")]
async fn setup_link(args: &LinkArgs) -> Result<(), CommandError> {
    use super::link::{LinkPlan, log_report, setup};
    let plan = LinkPlan {
        name: args.interface.clone(),
        ipv4: args.ipv4,
        ipv6: (!args.no_ipv6).then_some(args.ipv6),
    };
    let report = setup(&plan).await?;
    log_report(&plan, &report);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
async fn setup_link(_: &LinkArgs) -> Result<(), CommandError> {
    Err(CommandError::NotLinux)
}

async fn trust_policy(args: &TrustArgs) -> Result<(), CommandError> {
    let principal = match &args.agent_principal {
        Some(p) => p.clone(),
        None => {
            let sts = AwsSts::connect(&StsSettings {
                region: args.region.clone(),
                endpoint: args.sts_endpoint.clone(),
                timeout: Some(std::time::Duration::from_secs(5)),
            })
            .await;
            let arn = sts
                .caller_arn()
                .await
                .map_err(|e| CommandError::Principal(e.to_string()))?;
            trust::principal_of_caller(&arn)
        }
    };
    let policy = trust::trust_policy(
        &principal,
        &args.namespace,
        &args.service_account,
        args.cluster_name.as_deref(),
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&policy).expect("JSON serialises")
    );
    eprintln!(
        "apply it with: aws iam update-assume-role-policy --role-name {} --policy-document file://trust.json",
        trust::role_name(&args.role_arn)
    );
    eprintln!(
        "(the association for {}/{} must keep session tags on: without them these conditions never match)",
        args.namespace, args.service_account
    );
    Ok(())
}
