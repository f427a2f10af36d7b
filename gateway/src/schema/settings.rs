//! Live settings: what they are, and changing them.

use async_graphql::{Context, Json, Object, SimpleObject, Subscription};
use devart_domain::settings::Key;
use futures::{Stream, StreamExt};

use super::{caller, command_context, domain, require, services};
use crate::auth::Role;
use crate::error::gql;

#[derive(Debug, Clone, PartialEq, SimpleObject)]
pub struct Setting {
    /// `budget.alertThresholds`, `queue.defaultLeaseSeconds`, …
    pub key: String,
    pub value: Json<serde_json::Value>,
    pub default: Json<serde_json::Value>,
    pub description: String,
}

pub(crate) fn listed(state: &devart_domain::settings::SettingsState) -> Vec<Setting> {
    Key::ALL
        .into_iter()
        .map(|key| Setting {
            key: key.name().to_owned(),
            value: Json(state.get(key)),
            default: Json(key.default_value()),
            description: key.description().to_owned(),
        })
        .collect()
}

#[derive(Default)]
pub struct SettingsQuery;

#[Object]
impl SettingsQuery {
    /// Every setting with the value in effect. Their history is in `events(types: ["SettingChanged"])`.
    async fn settings(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Setting>> {
        caller(ctx)?;
        let state = services(ctx).commands.load_settings().await.map_err(gql)?.state;
        Ok(listed(&state))
    }
}

#[derive(Default)]
pub struct SettingsMutation;

#[Object]
impl SettingsMutation {
    /// Changes a setting (supervisor): validated for its key, recorded as an event, in effect in
    /// every running process within a second. Returns every setting.
    async fn update_setting(
        &self,
        ctx: &Context<'_>,
        key: String,
        value: Json<serde_json::Value>,
    ) -> async_graphql::Result<Vec<Setting>> {
        let caller = require(ctx, Role::Supervisor)?;
        let key = domain(Key::parse(&key))?;
        let context = command_context(ctx, &caller);
        let folded = services(ctx).commands.update_setting(key, value.0, &context).await.map_err(gql)?;
        Ok(listed(&folded.state))
    }
}

#[derive(Default)]
pub struct SettingsSubscription;

#[Subscription]
impl SettingsSubscription {
    /// Every setting, each time one changed (here or in any other process, within a second).
    async fn setting_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Vec<Setting>>>> {
        caller(ctx)?;
        let values = services(ctx).live.settings.after();
        Ok(values.map(|value| value.map(|settings| settings.as_ref().clone())))
    }
}
