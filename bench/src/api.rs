//! The GraphQL calls the benchmarks make, over devart's public API.

use super::*;

/// The GraphQL calls the benchmark makes, as an administrator or as an agent (its API key as the
/// token); cheap to clone into each request's task.
#[derive(Clone)]
pub(crate) struct Api(pub(crate) Client);

impl Api {
    /// The same API, called with another token (an agent's API key).
    pub(crate) fn with_token(&self, token: &str) -> Api {
        Api(self.0.with_token(token))
    }

    pub(crate) async fn create_task(&self, title: &str) -> anyhow::Result<()> {
        self.0
            .data("mutation($title: String!) { createTask(input: {title: $title}) { id } }", json!({ "title": title }))
            .await?;
        Ok(())
    }

    pub(crate) async fn me(&self) -> anyhow::Result<()> {
        self.0.data("{ me { subject } }", json!({})).await?;
        Ok(())
    }

    /// Registers an agent able to do `capabilities`; returns its API key.
    pub(crate) async fn register_agent(&self, name: &str, capabilities: &[&str]) -> anyhow::Result<String> {
        let data = self
            .0
            .data(
                "mutation($name: String!, $capabilities: [String!]!) { \
                   registerAgent(input: {name: $name, capabilities: $capabilities}) { apiKey } }",
                json!({ "name": name, "capabilities": capabilities }),
            )
            .await?;
        // Not `data` in the message: it holds the key.
        data["registerAgent"]["apiKey"].as_str().map(str::to_owned).context("registerAgent answered with no API key")
    }

    /// Claims a task as the agent whose key this is; its id, or `None` when nothing is pending.
    pub(crate) async fn claim_task(&self) -> anyhow::Result<Option<String>> {
        let data = self.0.data("mutation { claimTask(leaseSeconds: 30) { id } }", json!({})).await?;
        Ok(data["claimTask"]["id"].as_str().map(str::to_owned))
    }

    pub(crate) async fn complete_task(&self, id: &str) -> anyhow::Result<()> {
        self.0.data("mutation($id: ID!) { completeTask(taskId: $id) { id } }", json!({ "id": id })).await?;
        Ok(())
    }
}
