//! What a receiver gets: the notification as JSON, or a Slack or Microsoft
//! Teams message carrying the same summary, reason and evidence.

use serde_json::{Value, json};

use super::{Format, Notification};

/// The request body of `notification` for a receiver of `format`.
pub fn body(notification: &Notification, format: Format) -> Value {
    let evidence: Vec<String> = notification
        .evidence
        .iter()
        .map(|c| format!("{} {}: {}", c.metric, c.outcome, c.detail))
        .collect();
    match format {
        Format::Json => serde_json::to_value(notification).unwrap_or(Value::Null),
        Format::Slack => {
            let mut text = format!("*{}*", notification.summary);
            if !notification.reason.is_empty() {
                text.push_str(&format!("\n>{}", notification.reason));
            }
            for line in &evidence {
                text.push_str(&format!("\n• {line}"));
            }
            json!({ "text": text })
        }
        Format::Teams => {
            let mut card = vec![json!({
                "type": "TextBlock", "text": notification.summary,
                "weight": "Bolder", "size": "Medium", "wrap": true,
            })];
            if !notification.reason.is_empty() {
                card.push(json!({"type": "TextBlock", "text": notification.reason, "wrap": true}));
            }
            if !notification.evidence.is_empty() {
                let facts: Vec<Value> = notification
                    .evidence
                    .iter()
                    .map(|c| {
                        json!({"title": c.metric.to_string(), "value": format!("{}: {}", c.outcome, c.detail)})
                    })
                    .collect();
                card.push(json!({"type": "FactSet", "facts": facts}));
            }
            json!({
                "type": "message",
                "attachments": [{
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": null,
                    "content": {
                        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                        "type": "AdaptiveCard",
                        "version": "1.4",
                        "body": card,
                    },
                }],
            })
        }
    }
}
