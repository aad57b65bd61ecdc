//! The semantic layer: the final user message is embedded through the gateway's own
//! providers, and compared by cosine similarity with the messages of stored answers that share
//! the same context key (same model, parameters, system prompt and earlier turns; see
//! `key::context`). Context-exact matching is what keeps a paraphrase from hitting an answer
//! given under another system prompt or conversation.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::key::Key;

/// Longest an embeddings call may add to a request before it proceeds as a miss.
pub const EMBED_TIMEOUT: Duration = Duration::from_secs(5);

/// `data[0].embedding` of an OpenAI embeddings response, normalised.
pub fn parse_embedding(body: &[u8]) -> Result<Arc<[f32]>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let arr = v
        .get("data")
        .and_then(|d| d.get(0))
        .and_then(|d| d.get("embedding"))
        .and_then(Value::as_array)
        .ok_or("no data[0].embedding array in the response")?;
    let mut out: Vec<f32> = Vec::with_capacity(arr.len());
    for x in arr {
        out.push(x.as_f64().ok_or("embedding holds a non-number")? as f32);
    }
    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
    if out.is_empty() || !norm.is_normal() {
        return Err("empty or zero embedding".into());
    }
    for x in &mut out {
        *x /= norm;
    }
    Ok(Arc::from(out))
}

/// Cosine similarity of two unit vectors (`None` when their dimensions differ).
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.len() != b.len() {
        return None;
    }
    Some(a.iter().zip(b).map(|(x, y)| x * y).sum())
}

/// Candidates at or above `threshold`, most similar first.
pub fn ranked(query: &[f32], candidates: &[(Key, Arc<[f32]>)], threshold: f32) -> Vec<(Key, f32)> {
    let mut r: Vec<(Key, f32)> = candidates
        .iter()
        .filter_map(|(k, v)| cosine(query, v).map(|s| (*k, s)))
        .filter(|(_, s)| *s >= threshold)
        .collect();
    r.sort_by(|a, b| b.1.total_cmp(&a.1));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_rank() {
        let q = parse_embedding(
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[3.0,4.0]}]}"#,
        )
        .unwrap();
        assert!((q[0] - 0.6).abs() < 1e-6 && (q[1] - 0.8).abs() < 1e-6);
        assert!(parse_embedding(br#"{"data":[{"embedding":[0,0]}]}"#).is_err());
        assert!(parse_embedding(br#"{"data":[]}"#).is_err());
        assert!(parse_embedding(b"nope").is_err());

        let unit = |v: [f32; 2]| -> Arc<[f32]> {
            let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
            Arc::from(vec![v[0] / n, v[1] / n])
        };
        let cands = vec![
            (Key([1; 32]), unit([1.0, 0.0])),
            (Key([2; 32]), unit([0.98, 0.2])),
            (Key([3; 32]), unit([0.5, 0.87])),
            (Key([4; 32]), Arc::from(vec![1.0f32, 0.0, 0.0])),
        ];
        let r = ranked(&unit([1.0, 0.05]), &cands, 0.95);
        assert_eq!(r.len(), 2);
        assert!(r[0].1 >= r[1].1);
        assert_eq!(r[0].0, Key([1; 32]));
        assert!(ranked(&unit([0.0, 1.0]), &cands, 0.95).is_empty());
    }
}
