//! Strategic-merge patches over a multi-document config, with Talos's rules
//! (`configpatcher/strategic.go`, `merge/merge.go`):
//!
//! - patch documents find their target by `apiVersion`/`kind`/`name` (the
//!   `v1alpha1` document has no kind); unmatched ones are appended;
//! - maps merge per key, scalars overwrite, lists append, except the fields
//!   Talos marks `merge:"replace"` (`podSubnets`, `serviceSubnets`,
//!   `auditPolicy`), which are replaced;
//! - `$patch: delete` removes a whole document, a map key (`key: {$patch:
//!   delete}`) or the list elements whose fields equal the other fields of
//!   the deleting element.

use super::yaml::{Mapping, Value};

const DELETE: &str = "$patch";
const REPLACED: &[&str] = &["podSubnets", "serviceSubnets", "auditPolicy"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("patch {patch}: it does not parse as YAML: {reason}")]
    Yaml { patch: String, reason: String },
    #[error("patch {patch}: document {index} is not a mapping")]
    NotMapping { patch: String, index: usize },
    #[error(
        "patch {patch}: JSON6902 patches do not apply to multi-document configs; use a strategic merge"
    )]
    JsonPatch { patch: String },
}

/// A named strategic-merge patch (several documents allowed).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// Where it came from, for errors: `profile dell-r760`, `site`, …
    pub origin: String,
    pub docs: Vec<Value>,
}

impl Patch {
    pub fn parse(origin: &str, text: &str) -> Result<Patch, PatchError> {
        let docs = super::yaml::parse_all(text).map_err(|reason| PatchError::Yaml {
            patch: origin.to_owned(),
            reason,
        })?;
        for (index, doc) in docs.iter().enumerate() {
            match doc {
                Value::Mapping(_) => {}
                Value::Sequence(_) => {
                    return Err(PatchError::JsonPatch {
                        patch: origin.to_owned(),
                    });
                }
                _ => {
                    return Err(PatchError::NotMapping {
                        patch: origin.to_owned(),
                        index,
                    });
                }
            }
        }
        Ok(Patch {
            origin: origin.to_owned(),
            docs,
        })
    }
}

/// `(apiVersion, kind, name)`; the `v1alpha1` document is `("", "v1alpha1", "")`.
pub fn identity(doc: &Value) -> (String, String, String) {
    let get = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match doc.get("kind") {
        None => (String::new(), "v1alpha1".to_owned(), String::new()),
        Some(_) => (get("apiVersion"), get("kind"), get("name")),
    }
}

fn is_delete(v: &Value) -> bool {
    v.get(DELETE).and_then(Value::as_str) == Some("delete")
}

fn without_directive(m: &Mapping) -> Mapping {
    m.iter()
        .filter(|(k, _)| k.as_str() != Some(DELETE))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Applies `patch` to `docs` in place.
pub fn apply(docs: &mut Vec<Value>, patch: &Patch) {
    for p in &patch.docs {
        let id = identity(p);
        let target = docs.iter().position(|d| identity(d) == id);
        match (target, is_delete(p)) {
            (Some(i), true) => {
                docs.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge(&mut docs[i], p),
            (None, false) => docs.push(fresh(p)),
        }
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Mapping(t), Value::Mapping(p)) => {
            for (k, pv) in p {
                if k.as_str() == Some(DELETE) {
                    continue;
                }
                if is_delete(pv) {
                    t.shift_remove(k);
                    continue;
                }
                let replace = k.as_str().is_some_and(|k| REPLACED.contains(&k));
                match t.get_mut(k) {
                    Some(tv) if !replace => merge(tv, pv),
                    _ => {
                        t.insert(k.clone(), fresh(pv));
                    }
                }
            }
        }
        (Value::Sequence(t), Value::Sequence(p)) => {
            for item in p {
                match item {
                    Value::Mapping(m) if is_delete(item) => {
                        let spec = without_directive(m);
                        t.retain(|el| {
                            !spec.iter().all(|(k, v)| el.get(k) == Some(v)) || spec.is_empty()
                        });
                    }
                    other => t.push(fresh(other)),
                }
            }
        }
        (t, p) => {
            // Scalars (and type changes) overwrite. Talos keeps the target when
            // the patch value is a zero value, except `false`, which always wins.
            let zero = matches!(p, Value::Null)
                || p.as_str() == Some("")
                || p.as_i64() == Some(0) && !matches!(t, Value::Null);
            if !zero {
                *t = fresh(p);
            }
        }
    }
}

/// A patch value where nothing was before: merged into an empty value of its
/// kind, so its `$patch` directives are applied (to nothing) and dropped.
fn fresh(p: &Value) -> Value {
    let mut out = match p {
        Value::Mapping(_) => Value::Mapping(Mapping::new()),
        Value::Sequence(_) => Value::Sequence(Vec::new()),
        scalar => return scalar.clone(),
    };
    merge(&mut out, p);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Value> {
        super::super::yaml::parse_all(text).unwrap()
    }

    fn patched(base: &str, patch: &str) -> Vec<Value> {
        let mut d = docs(base);
        apply(&mut d, &Patch::parse("test", patch).unwrap());
        d
    }

    #[test]
    fn maps_merge_scalars_overwrite_lists_append() {
        let out = patched(
            "version: v1alpha1\nmachine:\n  certSANs: [a]\n  install:\n    wipe: true\n    disk: /dev/sda\n",
            "machine:\n  certSANs: [b]\n  install:\n    wipe: false\n    image: x\n",
        );
        assert_eq!(
            out,
            docs(
                "version: v1alpha1\nmachine:\n  certSANs: [a, b]\n  install:\n    wipe: false\n    disk: /dev/sda\n    image: x\n"
            )
        );
    }

    #[test]
    fn replace_fields_are_replaced_not_appended() {
        let out = patched(
            "cluster:\n  network:\n    podSubnets: [10.244.0.0/16]\n    serviceSubnets: [10.96.0.0/12]\n",
            "cluster:\n  network:\n    podSubnets: [10.42.0.0/16]\n",
        );
        assert_eq!(
            out,
            docs(
                "cluster:\n  network:\n    podSubnets: [10.42.0.0/16]\n    serviceSubnets: [10.96.0.0/12]\n"
            )
        );
    }

    #[test]
    fn documents_match_by_kind_and_name_else_append() {
        let base = "machine: {type: worker}\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n";
        let out = patched(
            base,
            "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: n1\nauto: \"off\"\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: net0\nup: true\n",
        );
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].get("hostname").and_then(Value::as_str), Some("n1"));
        assert_eq!(out[1].get("auto").and_then(Value::as_str), Some("off"));
        assert_eq!(
            identity(&out[2]),
            ("v1alpha1".into(), "LinkConfig".into(), "net0".into())
        );
    }

    #[test]
    fn delete_directives_remove_documents_keys_and_list_elements() {
        // Upstream patchdelete-strategic2.yaml against gen config's shape.
        let base = "version: v1alpha1\nmachine:\n  nodeLabels:\n    node.kubernetes.io/exclude-from-external-load-balancers: \"\"\n    keep: x\ncluster:\n  apiServer:\n    admissionControl:\n      - name: PodSecurity\n        configuration: {a: 1}\n      - name: Other\n---\napiVersion: v1alpha1\nkind: HostnameConfig\nauto: stable\n";
        let patch = "version: v1alpha1\ncluster:\n  apiServer:\n    admissionControl:\n    - name: PodSecurity\n      $patch: delete\nmachine:\n  nodeLabels:\n    node.kubernetes.io/exclude-from-external-load-balancers:\n      $patch: delete\n---\napiVersion: v1alpha1\nkind: HostnameConfig\n$patch: delete\n";
        let out = patched(base, patch);
        assert_eq!(
            out,
            docs(
                "version: v1alpha1\nmachine:\n  nodeLabels:\n    keep: x\ncluster:\n  apiServer:\n    admissionControl:\n      - name: Other\n"
            )
        );
    }

    #[test]
    fn new_values_arrive_once_without_directives() {
        let out = patched(
            "a: [[1]]\n",
            "a: [[2, 3]]\nb:\n  c: [{name: x, $patch: delete}, {name: y}]\n  d: {$patch: delete}\n",
        );
        assert_eq!(out, docs("a: [[1], [2, 3]]\nb:\n  c: [{name: y}]\n"));
    }

    #[test]
    fn zero_values_keep_the_target_but_false_wins() {
        let out = patched("a: x\nb: true\nc: 5\n", "a: \"\"\nb: false\nc: 0\n");
        assert_eq!(out, docs("a: x\nb: false\nc: 5\n"));
    }

    #[test]
    fn json_patches_and_scalars_are_refused() {
        assert!(matches!(
            Patch::parse("site", "- op: add\n  path: /machine/x\n  value: 1\n"),
            Err(PatchError::JsonPatch { .. })
        ));
        assert!(matches!(
            Patch::parse("site", "just text\n"),
            Err(PatchError::NotMapping { .. })
        ));
        assert!(matches!(
            Patch::parse("site", "a: [\n"),
            Err(PatchError::Yaml { .. })
        ));
    }
}
