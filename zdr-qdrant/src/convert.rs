//! Conversions between qdrant-client's gRPC messages and the JSON shapes of Qdrant's REST API,
//! which the manifest facts and the logical export format keep (so backups taken over REST
//! and over gRPC compare alike).

use std::collections::HashMap;

use qdrant_client::qdrant::{
    self as pb, DenseVector, MultiDenseVector, PointId, SparseVector, VectorParams,
    VectorParamsMap, VectorsConfig, point_id::PointIdOptions, value::Kind, vector, vector_output,
    vectors, vectors_config, vectors_output,
};
use serde_json::{Map, Number, Value, json};

/// A gRPC payload value as JSON.
pub(crate) fn value_to_json(v: &pb::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::DoubleValue(d)) => Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Some(Kind::IntegerValue(i)) => json!(i),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => payload_to_json(&s.fields),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// A JSON value as a gRPC payload value.
pub(crate) fn json_to_value(v: &Value) -> pb::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntegerValue(i),
            None => Kind::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(pb::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(pb::Struct {
            fields: json_to_payload(o),
        }),
    };
    pb::Value { kind: Some(kind) }
}

/// A gRPC payload as a JSON object.
pub(crate) fn payload_to_json(p: &HashMap<String, pb::Value>) -> Value {
    Value::Object(
        p.iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect::<Map<String, Value>>(),
    )
}

/// A JSON object as a gRPC payload.
pub(crate) fn json_to_payload(o: &Map<String, Value>) -> HashMap<String, pb::Value> {
    o.iter()
        .map(|(k, v)| (k.clone(), json_to_value(v)))
        .collect()
}

/// A point id as REST shows it: an integer or a UUID string.
pub(crate) fn id_to_json(id: Option<&PointId>) -> Value {
    match id.and_then(|i| i.point_id_options.as_ref()) {
        Some(PointIdOptions::Num(n)) => json!(n),
        Some(PointIdOptions::Uuid(u)) => Value::String(u.clone()),
        None => Value::Null,
    }
}

/// A REST point id as gRPC's; `None` when it is neither an unsigned integer nor a string.
pub(crate) fn json_to_id(v: &Value) -> Option<PointId> {
    match v {
        Value::Number(n) => n.as_u64().map(PointId::from),
        Value::String(s) => Some(PointId::from(s.as_str())),
        _ => None,
    }
}

fn one_vector_to_json(v: vector_output::Vector) -> Value {
    match v {
        vector_output::Vector::Dense(d) => json!(d.data),
        vector_output::Vector::Sparse(s) => json!({"indices": s.indices, "values": s.values}),
        vector_output::Vector::MultiDense(m) => {
            Value::Array(m.vectors.into_iter().map(|d| json!(d.data)).collect())
        }
    }
}

/// The vectors of a retrieved point as REST shows them (`vector`): a list of floats, a list
/// of lists (multivector), `{"indices", "values"}` (sparse), or an object of named vectors.
pub(crate) fn vectors_to_json(v: Option<pb::VectorsOutput>) -> Value {
    match v.and_then(|v| v.vectors_options) {
        None => Value::Null,
        Some(vectors_output::VectorsOptions::Vector(v)) => one_vector_to_json(v.into_vector()),
        Some(vectors_output::VectorsOptions::Vectors(named)) => Value::Object(
            named
                .vectors
                .into_iter()
                .map(|(k, v)| (k, one_vector_to_json(v.into_vector())))
                .collect(),
        ),
    }
}

fn floats(v: &[Value]) -> Option<Vec<f32>> {
    v.iter().map(|x| x.as_f64().map(|f| f as f32)).collect()
}

fn is_sparse(o: &Map<String, Value>) -> bool {
    o.len() == 2 && o.get("indices").is_some_and(Value::is_array) && o.contains_key("values")
}

fn json_to_one_vector(v: &Value) -> Option<vector::Vector> {
    match v {
        Value::Array(items) if items.iter().all(Value::is_array) && !items.is_empty() => {
            let vectors = items
                .iter()
                .map(|i| i.as_array().and_then(|a| floats(a)))
                .map(|d| d.map(|data| DenseVector { data }))
                .collect::<Option<Vec<_>>>()?;
            Some(vector::Vector::MultiDense(MultiDenseVector { vectors }))
        }
        Value::Array(items) => Some(vector::Vector::Dense(DenseVector {
            data: floats(items)?,
        })),
        Value::Object(o) if is_sparse(o) => {
            let indices = o["indices"]
                .as_array()?
                .iter()
                .map(|i| i.as_u64().and_then(|i| u32::try_from(i).ok()))
                .collect::<Option<Vec<u32>>>()?;
            let values = floats(o["values"].as_array()?)?;
            Some(vector::Vector::Sparse(SparseVector { values, indices }))
        }
        _ => None,
    }
}

fn wrap(v: vector::Vector) -> pb::Vector {
    pb::Vector {
        vector: Some(v),
        ..Default::default()
    }
}

/// REST `vector` JSON as gRPC vectors; `None` when the shape is not one of the above.
pub(crate) fn json_to_vectors(v: &Value) -> Option<pb::Vectors> {
    let options = match v {
        Value::Object(o) if !is_sparse(o) => {
            let mut named = HashMap::new();
            for (k, v) in o {
                named.insert(k.clone(), wrap(json_to_one_vector(v)?));
            }
            vectors::VectorsOptions::Vectors(pb::NamedVectors { vectors: named })
        }
        other => vectors::VectorsOptions::Vector(wrap(json_to_one_vector(other)?)),
    };
    Some(pb::Vectors {
        vectors_options: Some(options),
    })
}

fn distance_name(d: i32) -> &'static str {
    pb::Distance::try_from(d)
        .map(|d| d.as_str_name())
        .unwrap_or("UnknownDistance")
}

fn params_to_json(p: &VectorParams) -> Value {
    let mut out = json!({"size": p.size, "distance": distance_name(p.distance)});
    #[allow(deprecated)]
    if let Some(on_disk) = p.on_disk {
        out["on_disk"] = json!(on_disk);
    }
    if let Some(dt) = p.datatype.and_then(|d| pb::Datatype::try_from(d).ok())
        && dt != pb::Datatype::Default
    {
        out["datatype"] = json!(dt.as_str_name().to_lowercase());
    }
    if let Some(m) = &p.multivector_config {
        let comparator = pb::MultiVectorComparator::try_from(m.comparator)
            .map(|c| c.as_str_name())
            .unwrap_or("MaxSim");
        let snake = if comparator == "MaxSim" {
            "max_sim"
        } else {
            comparator
        };
        out["multivector_config"] = json!({ "comparator": snake });
    }
    out
}

/// A collection's vector configuration as REST shows it (`config.params.vectors`).
pub(crate) fn vectors_config_to_json(c: Option<&VectorsConfig>) -> Value {
    match c.and_then(|c| c.config.as_ref()) {
        None => Value::Null,
        Some(vectors_config::Config::Params(p)) => params_to_json(p),
        Some(vectors_config::Config::ParamsMap(m)) => Value::Object(
            m.map
                .iter()
                .map(|(k, p)| (k.clone(), params_to_json(p)))
                .collect(),
        ),
    }
}

fn json_to_params(v: &Value) -> Option<VectorParams> {
    let mut p = VectorParams {
        size: v["size"].as_u64()?,
        distance: pb::Distance::from_str_name(v["distance"].as_str()?)? as i32,
        ..Default::default()
    };
    #[allow(deprecated)]
    {
        p.on_disk = v["on_disk"].as_bool();
    }
    if let Some(dt) = v["datatype"].as_str() {
        let name = match dt {
            "float32" => "Float32",
            "uint8" => "Uint8",
            "float16" => "Float16",
            _ => "Default",
        };
        p.datatype = pb::Datatype::from_str_name(name).map(|d| d as i32);
    }
    if v["multivector_config"].is_object() {
        p.multivector_config = Some(pb::MultiVectorConfig {
            comparator: pb::MultiVectorComparator::MaxSim as i32,
        });
    }
    Some(p)
}

/// REST vector configuration JSON as gRPC's; `None` when it cannot be read.
pub(crate) fn json_to_vectors_config(v: &Value) -> Option<VectorsConfig> {
    let config = if v.get("size").is_some() {
        vectors_config::Config::Params(json_to_params(v)?)
    } else {
        let mut map = HashMap::new();
        for (k, p) in v.as_object()? {
            map.insert(k.clone(), json_to_params(p)?);
        }
        vectors_config::Config::ParamsMap(VectorParamsMap { map })
    };
    Some(VectorsConfig {
        config: Some(config),
    })
}

/// Sparse vector names as JSON (`{"name": {"modifier": "idf"}}`), `null` when there are none.
pub(crate) fn sparse_config_to_json(c: Option<&pb::SparseVectorConfig>) -> Value {
    match c {
        Some(c) if !c.map.is_empty() => Value::Object(
            c.map
                .iter()
                .map(|(k, p)| {
                    let mut v = json!({});
                    if p.modifier == Some(pb::Modifier::Idf as i32) {
                        v["modifier"] = json!("idf");
                    }
                    (k.clone(), v)
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The reverse of [`sparse_config_to_json`].
pub(crate) fn json_to_sparse_config(v: &Value) -> Option<pb::SparseVectorConfig> {
    let o = v.as_object()?;
    Some(pb::SparseVectorConfig {
        map: o
            .iter()
            .map(|(k, p)| {
                let modifier = (p["modifier"] == "idf").then_some(pb::Modifier::Idf as i32);
                (
                    k.clone(),
                    pb::SparseVectorParams {
                        index: None,
                        modifier,
                    },
                )
            })
            .collect(),
    })
}

/// Payload indexes as REST shows them: `{field: {"data_type": "integer", "points": n}}`.
pub(crate) fn payload_schema_to_json(s: &HashMap<String, pb::PayloadSchemaInfo>) -> Value {
    Value::Object(
        s.iter()
            .map(|(k, info)| {
                let t = pb::PayloadSchemaType::try_from(info.data_type)
                    .map(|t| t.as_str_name().to_lowercase())
                    .unwrap_or_else(|_| "unknowntype".into());
                let mut v = json!({ "data_type": t });
                if let Some(points) = info.points {
                    v["points"] = json!(points);
                }
                (k.clone(), v)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let v = json!({"s": "x", "i": -3, "f": 1.5, "b": true, "n": null,
                       "l": [1, "a", {"k": [2.5]}], "o": {"deep": {"x": 1}}});
        let back = payload_to_json(&json_to_payload(v.as_object().unwrap_or(&Map::new())));
        assert_eq!(back, v);
    }

    #[test]
    fn vectors_round_trip() {
        for v in [
            json!([1.0, 0.5]),
            json!([[1.0, 2.0], [3.0, 4.0]]),
            json!({"indices": [1, 7], "values": [0.5, 0.25]}),
            json!({"text": [1.0, 2.0], "sparse": {"indices": [3], "values": [1.0]}}),
        ] {
            let grpc = json_to_vectors(&v);
            assert!(grpc.is_some(), "{v}");
            // Output messages have the same oneof shapes as input ones.
            let out = grpc.map(|g| match g.vectors_options {
                Some(vectors::VectorsOptions::Vector(x)) => pb::VectorsOutput {
                    vectors_options: Some(vectors_output::VectorsOptions::Vector(out(x))),
                },
                Some(vectors::VectorsOptions::Vectors(n)) => pb::VectorsOutput {
                    vectors_options: Some(vectors_output::VectorsOptions::Vectors(
                        pb::NamedVectorsOutput {
                            vectors: n.vectors.into_iter().map(|(k, x)| (k, out(x))).collect(),
                        },
                    )),
                },
                None => pb::VectorsOutput::default(),
            });
            assert_eq!(vectors_to_json(out), v);
        }
        assert!(json_to_vectors(&json!("nope")).is_none());
    }

    fn out(x: pb::Vector) -> pb::VectorOutput {
        let vector = x.vector.map(|v| match v {
            vector::Vector::Dense(d) => vector_output::Vector::Dense(d),
            vector::Vector::Sparse(s) => vector_output::Vector::Sparse(s),
            vector::Vector::MultiDense(m) => vector_output::Vector::MultiDense(m),
            _ => vector_output::Vector::Dense(DenseVector::default()),
        });
        pb::VectorOutput {
            vector,
            ..Default::default()
        }
    }

    #[test]
    fn vector_config_round_trips() {
        for v in [
            json!({"size": 4, "distance": "Dot"}),
            json!({"size": 8, "distance": "Cosine", "on_disk": true, "datatype": "float16"}),
            json!({"a": {"size": 2, "distance": "Euclid"}, "b": {"size": 3, "distance": "Manhattan",
                   "multivector_config": {"comparator": "max_sim"}}}),
        ] {
            let c = json_to_vectors_config(&v);
            assert_eq!(vectors_config_to_json(c.as_ref()), v);
        }
        assert!(json_to_vectors_config(&json!({"size": 4, "distance": "Nope"})).is_none());
    }
}
