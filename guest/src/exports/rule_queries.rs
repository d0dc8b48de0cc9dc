//! `rule-queries`: the input rules the domains enforce, for hosts to describe.

use super::Relay;
use crate::bindings::agent_relay::relay::types::JsonText;
use crate::bindings::exports::agent_relay::relay::rule_queries::{Guest, InputRule};
use crate::input_rules;

impl Guest for Relay {
    fn input_rules() -> Vec<InputRule> {
        input_rules::all()
            .into_iter()
            .map(|(export, at, keywords)| InputRule {
                export,
                at,
                keywords: JsonText {
                    json: serde_json::Value::Object(keywords).to_string(),
                },
            })
            .collect()
    }
}
