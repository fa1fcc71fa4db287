//! The evaluated whitelist of a dkms.conf: every name as a bash array (scalars are index 0),
//! sparse indices and empty values kept, exactly as DKMS holds them after `safe_source`.

use std::collections::BTreeMap;

/// Whitelisted names and their (possibly sparse) array values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    map: BTreeMap<String, BTreeMap<usize, String>>,
}

impl Directives {
    /// Sets `NAME[index]=value`.
    pub fn set(&mut self, name: &str, index: usize, value: String) {
        self.map
            .entry(name.to_string())
            .or_default()
            .insert(index, value);
    }

    /// Forgets every element of `name` (bash `unset NAME`).
    pub fn unset(&mut self, name: &str) {
        self.map.remove(name);
    }

    /// `${NAME[index]}`, if set.
    pub fn get(&self, name: &str, index: usize) -> Option<&str> {
        self.map.get(name)?.get(&index).map(String::as_str)
    }

    /// `${NAME}` (index 0), empty when unset — the way DKMS reads scalars.
    pub fn scalar(&self, name: &str) -> &str {
        self.get(name, 0).unwrap_or("")
    }

    /// `${#NAME[@]}`: the number of set elements (not the highest index).
    pub fn count(&self, name: &str) -> usize {
        self.map.get(name).map_or(0, BTreeMap::len)
    }

    /// `${!NAME[@]}`: the set indices, ascending.
    pub fn indices(&self, name: &str) -> Vec<usize> {
        self.map
            .get(name)
            .map_or_else(Vec::new, |m| m.keys().copied().collect())
    }

    /// Every name that has at least one element, ascending.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Applies a function to every value (used for DKMS's trailing-CR strip).
    pub fn map_values(&mut self, f: impl Fn(&mut String)) {
        for values in self.map.values_mut() {
            values.values_mut().for_each(&f);
        }
    }

    /// `{"NAME": ["v0", null, "v2"]}` for every name with a non-empty value; gaps are null.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (name, values) in &self.map {
            if values.values().all(String::is_empty) {
                continue;
            }
            let len = values.keys().next_back().map_or(0, |i| i + 1);
            let arr = (0..len)
                .map(|i| match values.get(&i) {
                    Some(v) => serde_json::Value::String(v.clone()),
                    None => serde_json::Value::Null,
                })
                .collect();
            out.insert(name.clone(), serde_json::Value::Array(arr));
        }
        serde_json::Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_arrays_keep_gaps_in_json() {
        let mut d = Directives::default();
        d.set("BUILT_MODULE_NAME", 0, "a".into());
        d.set("BUILT_MODULE_NAME", 2, "c".into());
        d.set("CLEAN", 0, String::new());
        assert_eq!(d.count("BUILT_MODULE_NAME"), 2);
        assert_eq!(d.indices("BUILT_MODULE_NAME"), vec![0, 2]);
        assert_eq!(
            d.to_json(),
            serde_json::json!({"BUILT_MODULE_NAME": ["a", null, "c"]})
        );
    }
}
