//! devart's integration tests: one crate, against the real Postgres and NATS JetStream.
//!
//! Each test gets a fresh database (cloned from a migrated template) and its own bus prefix, so
//! tests run in parallel without seeing each other.

mod support;

mod agents;
mod alerts;
mod analytics;
mod approval_requests;
mod brakes;
mod budgets;
mod chaos;
mod cli;
mod correlation;
mod crash;
mod dashboard;
mod event_store;
mod gateway;
mod hardening;
mod honest_failures;
mod integrity;
mod knowledge;
mod live;
mod operator;
mod people;
mod portable;
mod projections;
mod queue;
mod reference_agent;
mod relay;
mod schema;
mod settings;
mod snapshot;
mod spending_caps;
mod stored_data;
mod time_travel;
mod websocket;
mod workflows;
