use super::*;

fn string_value(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn int_value(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn kvlist(values: Vec<KeyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList { values })),
    }
}

fn array(values: Vec<AnyValue>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
    }
}

/// The log records of a request, in order.
fn records(request: &ExportLogsServiceRequest) -> Vec<&LogRecord> {
    request
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .collect()
}

/// A logs request holding one record, given as JSON.
fn one_record(record: &str) -> String {
    format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{record}]}}]}}]}}"#)
}

fn decode_record(record: &str) -> Result<LogRecord> {
    let request = decode_logs_json(one_record(record).as_bytes())?;
    Ok(records(&request)[0].clone())
}

/// A log record whose body is the given AnyValue JSON.
fn decode_body(any_value: &str) -> Result<Option<AnyValue>> {
    Ok(decode_record(&format!(r#"{{"body":{any_value}}}"#))?.body)
}

#[test]
fn decodes_logs_as_sdks_send_them() {
    // The first record is shaped like the JavaScript SDK's output (64-bit
    // integers as strings, lowercase hex), the second like hand-written or
    // older clients (numbers, uppercase hex, enum names, nulls), the third
    // like the collector's pdata marshaler.
    let body = r#"{
      "resourceLogs": [{
        "resource": {
          "attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "telemetry.sdk.language", "value": {"stringValue": "nodejs"}}
          ],
          "droppedAttributesCount": 0
        },
        "scopeLogs": [{
          "scope": {"name": "checkout-logger", "version": "1.2.0", "attributes": [], "droppedAttributesCount": 1},
          "logRecords": [
            {
              "timeUnixNano": "1700000000123456789",
              "observedTimeUnixNano": "1700000000123456999",
              "severityNumber": 9,
              "severityText": "INFO",
              "body": {"stringValue": "order placed"},
              "attributes": [
                {"key": "order.id", "value": {"intValue": 42}},
                {"key": "amount", "value": {"doubleValue": 19.99}},
                {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"boolValue": true}]}}},
                {"key": "user", "value": {"kvlistValue": {"values": [{"key": "id", "value": {"intValue": "7"}}]}}}
              ],
              "droppedAttributesCount": 0,
              "flags": 1,
              "traceId": "5b8efff798038103d269b633813fc60c",
              "spanId": "eee19b7ec3c1b174",
              "eventName": "order.placed"
            },
            {
              "timeUnixNano": 1700000000123456789,
              "observedTimeUnixNano": null,
              "severityNumber": "SEVERITY_NUMBER_ERROR",
              "body": {"bytesValue": "aGVsbG8="},
              "attributes": [{"key": "empty", "value": {}}, {"key": "unset"}],
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "",
              "futureField": {"ignored": [1, 2, 3]}
            },
            {
              "timeUnixNano": "0",
              "observedTimeUnixNano": "1700000001000000000",
              "severityNumber": 13,
              "severityText": "WARN",
              "body": {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "disk low"}}]}},
              "attributes": [{"key": "free", "value": {"intValue": "-12"}}],
              "flags": 0,
              "traceId": "",
              "spanId": ""
            }
          ],
          "schemaUrl": "https://opentelemetry.io/schemas/1.26.0"
        }],
        "schemaUrl": "https://opentelemetry.io/schemas/1.27.0"
      }]
    }"#;
    let trace_id = hex::decode("5b8efff798038103d269b633813fc60c").unwrap();
    let expected = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", string_value("checkout")),
                    kv("telemetry.sdk.language", string_value("nodejs")),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "checkout-logger".into(),
                    version: "1.2.0".into(),
                    attributes: vec![],
                    dropped_attributes_count: 1,
                }),
                log_records: vec![
                    LogRecord {
                        time_unix_nano: 1_700_000_000_123_456_789,
                        observed_time_unix_nano: 1_700_000_000_123_456_999,
                        severity_number: 9,
                        severity_text: "INFO".into(),
                        body: Some(string_value("order placed")),
                        attributes: vec![
                            kv("order.id", int_value(42)),
                            kv(
                                "amount",
                                AnyValue {
                                    value: Some(any_value::Value::DoubleValue(19.99)),
                                },
                            ),
                            kv(
                                "tags",
                                array(vec![
                                    string_value("a"),
                                    AnyValue {
                                        value: Some(any_value::Value::BoolValue(true)),
                                    },
                                ]),
                            ),
                            kv("user", kvlist(vec![kv("id", int_value(7))])),
                        ],
                        dropped_attributes_count: 0,
                        flags: 1,
                        trace_id: trace_id.clone(),
                        span_id: hex::decode("eee19b7ec3c1b174").unwrap(),
                        event_name: "order.placed".into(),
                    },
                    LogRecord {
                        time_unix_nano: 1_700_000_000_123_456_789,
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::BytesValue(b"hello".to_vec())),
                        }),
                        attributes: vec![
                            kv("empty", AnyValue::default()),
                            KeyValue {
                                key: "unset".into(),
                                ..Default::default()
                            },
                        ],
                        trace_id,
                        ..Default::default()
                    },
                    LogRecord {
                        observed_time_unix_nano: 1_700_000_001_000_000_000,
                        severity_number: 13,
                        severity_text: "WARN".into(),
                        body: Some(kvlist(vec![kv("msg", string_value("disk low"))])),
                        attributes: vec![kv("free", int_value(-12))],
                        ..Default::default()
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
        }],
    };
    assert_eq!(decode_logs_json(body.as_bytes()).unwrap(), expected);
}

#[test]
fn decodes_any_values() {
    let cases: &[(&str, Option<AnyValue>)] = &[
        (r#"{"stringValue":"hi"}"#, Some(string_value("hi"))),
        (r#"{"string_value":"hi"}"#, Some(string_value("hi"))),
        (r#"{"stringValue":""}"#, Some(string_value(""))),
        (
            r#"{"boolValue":false}"#,
            Some(AnyValue {
                value: Some(any_value::Value::BoolValue(false)),
            }),
        ),
        (
            r#"{"intValue":"9223372036854775807"}"#,
            Some(int_value(i64::MAX)),
        ),
        (
            r#"{"intValue":-9223372036854775808}"#,
            Some(int_value(i64::MIN)),
        ),
        (r#"{"intValue":"1e3"}"#, Some(int_value(1000))),
        (r#"{"intValue":5.0}"#, Some(int_value(5))),
        (
            r#"{"doubleValue":1}"#,
            Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(1.0)),
            }),
        ),
        (
            r#"{"doubleValue":"2.5"}"#,
            Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(2.5)),
            }),
        ),
        (
            r#"{"doubleValue":"-Infinity"}"#,
            Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(f64::NEG_INFINITY)),
            }),
        ),
        (
            r#"{"bytesValue":"AP8="}"#,
            Some(AnyValue {
                value: Some(any_value::Value::BytesValue(vec![0, 255])),
            }),
        ),
        (
            r#"{"bytesValue":"_-8"}"#,
            Some(AnyValue {
                value: Some(any_value::Value::BytesValue(vec![0xff, 0xef])),
            }),
        ),
        (r#"{"arrayValue":{}}"#, Some(array(vec![]))),
        (
            r#"{"array_value":{"values":[{"intValue":1},{}]}}"#,
            Some(array(vec![int_value(1), AnyValue::default()])),
        ),
        (
            r#"{"kvlist_value":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}"#,
            Some(kvlist(vec![kv("k", string_value("v"))])),
        ),
        (
            r#"{"stringValueStrindex":3}"#,
            Some(AnyValue {
                value: Some(any_value::Value::StringValueStrindex(3)),
            }),
        ),
        (r#"{"stringValue":null}"#, Some(AnyValue::default())),
        (r#"{"newKind":{"x":1}}"#, Some(AnyValue::default())),
        ("{}", Some(AnyValue::default())),
        ("null", None),
    ];
    for (json, expected) in cases {
        assert_eq!(&decode_body(json).unwrap(), expected, "{json}");
    }
}

#[test]
fn decodes_special_doubles() {
    let cases = [
        ("\"NaN\"", f64::NAN),
        ("\"Infinity\"", f64::INFINITY),
        ("\"-Infinity\"", f64::NEG_INFINITY),
        ("-0.0", -0.0),
    ];
    for (json, expected) in cases {
        let body = decode_body(&format!(r#"{{"doubleValue":{json}}}"#)).unwrap();
        let Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(got)),
        }) = body
        else {
            panic!("{json}: {body:?}");
        };
        assert_eq!(got.to_bits(), expected.to_bits(), "{json}");
    }
}

#[test]
fn decodes_log_record_fields() {
    let cases: &[(&str, LogRecord)] = &[
        // Snake case, as proto3 parsers must accept.
        (
            r#"{"time_unix_nano":"5","observed_time_unix_nano":6,
                "severity_number":"SEVERITY_NUMBER_FATAL4","severity_text":"F",
                "dropped_attributes_count":2,"trace_id":"00ff","span_id":"AbCd","event_name":"e"}"#,
            LogRecord {
                time_unix_nano: 5,
                observed_time_unix_nano: 6,
                severity_number: 24,
                severity_text: "F".into(),
                dropped_attributes_count: 2,
                trace_id: vec![0x00, 0xff],
                span_id: vec![0xab, 0xcd],
                event_name: "e".into(),
                ..Default::default()
            },
        ),
        // Ids of the wrong length are kept for record validation to judge.
        (
            r#"{"traceId":"000102030405060708090a0b0c0d0e0f10"}"#,
            LogRecord {
                trace_id: (0..17).collect(),
                ..Default::default()
            },
        ),
        // Numeric strings for enums, names for flags, unknown severity numbers.
        (
            r#"{"severityNumber":"3","flags":"LOG_RECORD_FLAGS_TRACE_FLAGS_MASK"}"#,
            LogRecord {
                severity_number: 3,
                flags: 255,
                ..Default::default()
            },
        ),
        (
            r#"{"severityNumber":42}"#,
            LogRecord {
                severity_number: 42,
                ..Default::default()
            },
        ),
        (
            r#"{"timeUnixNano":"18446744073709551615","flags":4294967295}"#,
            LogRecord {
                time_unix_nano: u64::MAX,
                flags: u32::MAX,
                ..Default::default()
            },
        ),
        // null means default, whatever the field's type.
        (
            r#"{"timeUnixNano":null,"body":null,"attributes":null,"traceId":null,
                "severityNumber":null,"severityText":null}"#,
            LogRecord::default(),
        ),
        ("null", LogRecord::default()),
    ];
    for (json, expected) in cases {
        assert_eq!(&decode_record(json).unwrap(), expected, "{json}");
    }
}

#[test]
fn decodes_traces_with_events_links_and_status() {
    let body = r#"{"resourceSpans":[{
        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
        "scopeSpans":[{
          "scope":{"name":"@opentelemetry/instrumentation-http","version":"0.52.0"},
          "spans":[{
            "traceId":"71699b6fe85982c7c8995ea3d9c95df2",
            "spanId":"3c191d03fa8be065",
            "parentSpanId":"",
            "traceState":"vendor=1",
            "flags":257,
            "name":"GET /orders",
            "kind":2,
            "startTimeUnixNano":"1700000000000000000",
            "endTimeUnixNano":"1700000000250000000",
            "attributes":[{"key":"http.status_code","value":{"intValue":"200"}}],
            "droppedAttributesCount":0,
            "events":[{"timeUnixNano":"1700000000100000000","name":"cache miss",
                       "attributes":[{"key":"key","value":{"stringValue":"o:1"}}],"droppedAttributesCount":1}],
            "droppedEventsCount":2,
            "links":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331",
                      "traceState":"x=y","attributes":[],"droppedAttributesCount":3,"flags":1}],
            "droppedLinksCount":4,
            "status":{"message":"upstream timeout","code":2}
          },{
            "trace_id":"71699b6fe85982c7c8995ea3d9c95df2",
            "span_id":"3c191d03fa8be066",
            "parent_span_id":"3c191d03fa8be065",
            "name":"SELECT orders",
            "kind":"SPAN_KIND_CLIENT",
            "flags":"SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK",
            "start_time_unix_nano":1700000000010000000,
            "end_time_unix_nano":1700000000020000000,
            "dropped_events_count":"1",
            "status":{"code":"STATUS_CODE_OK"}
          }]
        }]
    }]}"#;
    let trace_id = hex::decode("71699b6fe85982c7c8995ea3d9c95df2").unwrap();
    let expected = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", string_value("api"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "@opentelemetry/instrumentation-http".into(),
                    version: "0.52.0".into(),
                    ..Default::default()
                }),
                spans: vec![
                    Span {
                        trace_id: trace_id.clone(),
                        span_id: hex::decode("3c191d03fa8be065").unwrap(),
                        trace_state: "vendor=1".into(),
                        parent_span_id: vec![],
                        flags: 257,
                        name: "GET /orders".into(),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_250_000_000,
                        attributes: vec![kv("http.status_code", int_value(200))],
                        dropped_attributes_count: 0,
                        events: vec![span::Event {
                            time_unix_nano: 1_700_000_000_100_000_000,
                            name: "cache miss".into(),
                            attributes: vec![kv("key", string_value("o:1"))],
                            dropped_attributes_count: 1,
                        }],
                        dropped_events_count: 2,
                        links: vec![span::Link {
                            trace_id: hex::decode("0af7651916cd43dd8448eb211c80319c").unwrap(),
                            span_id: hex::decode("b7ad6b7169203331").unwrap(),
                            trace_state: "x=y".into(),
                            attributes: vec![],
                            dropped_attributes_count: 3,
                            flags: 1,
                        }],
                        dropped_links_count: 4,
                        status: Some(Status {
                            message: "upstream timeout".into(),
                            code: 2,
                        }),
                    },
                    Span {
                        trace_id,
                        span_id: hex::decode("3c191d03fa8be066").unwrap(),
                        parent_span_id: hex::decode("3c191d03fa8be065").unwrap(),
                        name: "SELECT orders".into(),
                        kind: 3,
                        flags: 256,
                        start_time_unix_nano: 1_700_000_000_010_000_000,
                        end_time_unix_nano: 1_700_000_000_020_000_000,
                        dropped_events_count: 1,
                        status: Some(Status {
                            message: String::new(),
                            code: 1,
                        }),
                        ..Default::default()
                    },
                ],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    assert_eq!(decode_traces_json(body.as_bytes()).unwrap(), expected);
}

#[test]
fn decodes_all_metric_types() {
    let body = r#"{"resourceMetrics":[{
      "resource":{"attributes":[{"key":"host.name","value":{"stringValue":"web-1"}}]},
      "scopeMetrics":[{
        "scope":{"name":"meter"},
        "metrics":[
          {"name":"cpu.temp","unit":"Cel","description":"temperature",
           "metadata":[{"key":"origin","value":{"stringValue":"sensor"}}],
           "gauge":{"dataPoints":[{"timeUnixNano":"100","asDouble":41.5,
             "attributes":[{"key":"core","value":{"intValue":"0"}}],
             "exemplars":[{"timeUnixNano":"99","asDouble":41.0,"spanId":"eee19b7ec3c1b174",
               "traceId":"5b8efff798038103d269b633813fc60c",
               "filteredAttributes":[{"key":"k","value":{"stringValue":"v"}}]}]}]}},
          {"name":"requests","sum":{"dataPoints":[{"startTimeUnixNano":"1","timeUnixNano":"2","asInt":"12",
             "flags":"DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK"}],
           "aggregationTemporality":"AGGREGATION_TEMPORALITY_CUMULATIVE","isMonotonic":true}},
          {"name":"latency","histogram":{"dataPoints":[{"timeUnixNano":"3","count":"6","sum":12.5,
             "bucketCounts":["1",2,"3"],"explicitBounds":[1,5.5],"min":0.5,"max":"9",
             "exemplars":[{"asInt":7,"timeUnixNano":4}]}],"aggregationTemporality":1}},
          {"name":"size","exponentialHistogram":{"dataPoints":[{"timeUnixNano":"5","count":"4","sum":10,
             "scale":-2,"zeroCount":"1","zeroThreshold":0.001,
             "positive":{"offset":-1,"bucketCounts":["1","2"]},"negative":{},"flags":1}],
           "aggregationTemporality":2}},
          {"name":"rtt","summary":{"dataPoints":[{"timeUnixNano":"6","count":3,"sum":4.5,
             "quantileValues":[{"quantile":0.5,"value":1},{"quantile":1,"value":"Infinity"}]}]}},
          {"name":"empty"}
        ]
      }]
    }]}"#;
    let request = decode_metrics_json(body.as_bytes()).unwrap();
    let resource = &request.resource_metrics[0];
    assert_eq!(
        resource.resource.as_ref().unwrap().attributes,
        vec![kv("host.name", string_value("web-1"))]
    );
    let metrics = &resource.scope_metrics[0].metrics;
    assert_eq!(
        resource.scope_metrics[0].scope.as_ref().unwrap().name,
        "meter"
    );
    assert_eq!(metrics.len(), 6);

    let gauge = Metric {
        name: "cpu.temp".into(),
        description: "temperature".into(),
        unit: "Cel".into(),
        metadata: vec![kv("origin", string_value("sensor"))],
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("core", int_value(0))],
                time_unix_nano: 100,
                exemplars: vec![Exemplar {
                    filtered_attributes: vec![kv("k", string_value("v"))],
                    time_unix_nano: 99,
                    span_id: hex::decode("eee19b7ec3c1b174").unwrap(),
                    trace_id: hex::decode("5b8efff798038103d269b633813fc60c").unwrap(),
                    value: Some(exemplar::Value::AsDouble(41.0)),
                }],
                value: Some(number_data_point::Value::AsDouble(41.5)),
                ..Default::default()
            }],
        })),
    };
    let sum = Metric {
        name: "requests".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                start_time_unix_nano: 1,
                time_unix_nano: 2,
                flags: 1,
                value: Some(number_data_point::Value::AsInt(12)),
                ..Default::default()
            }],
            aggregation_temporality: 2,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "latency".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                time_unix_nano: 3,
                count: 6,
                sum: Some(12.5),
                bucket_counts: vec![1, 2, 3],
                explicit_bounds: vec![1.0, 5.5],
                exemplars: vec![Exemplar {
                    time_unix_nano: 4,
                    value: Some(exemplar::Value::AsInt(7)),
                    ..Default::default()
                }],
                min: Some(0.5),
                max: Some(9.0),
                ..Default::default()
            }],
            aggregation_temporality: 1,
        })),
        ..Default::default()
    };
    let exponential = Metric {
        name: "size".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                time_unix_nano: 5,
                count: 4,
                sum: Some(10.0),
                scale: -2,
                zero_count: 1,
                zero_threshold: 0.001,
                positive: Some(Buckets {
                    offset: -1,
                    bucket_counts: vec![1, 2],
                }),
                negative: Some(Buckets::default()),
                flags: 1,
                ..Default::default()
            }],
            aggregation_temporality: 2,
        })),
        ..Default::default()
    };
    let summary = Metric {
        name: "rtt".into(),
        data: Some(metric::Data::Summary(Summary {
            data_points: vec![SummaryDataPoint {
                time_unix_nano: 6,
                count: 3,
                sum: 4.5,
                quantile_values: vec![
                    ValueAtQuantile {
                        quantile: 0.5,
                        value: 1.0,
                    },
                    ValueAtQuantile {
                        quantile: 1.0,
                        value: f64::INFINITY,
                    },
                ],
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let empty = Metric {
        name: "empty".into(),
        ..Default::default()
    };
    assert_eq!(
        metrics,
        &[gauge, sum, histogram, exponential, summary, empty]
    );
}

#[test]
fn decodes_snake_case_metrics() {
    let body = r#"{"resource_metrics":[{"scope_metrics":[{"metrics":[
        {"name":"m","exponential_histogram":{"aggregation_temporality":1,"data_points":[{
          "start_time_unix_nano":"1","time_unix_nano":"2","zero_count":3,"zero_threshold":"0.5",
          "positive":{"bucket_counts":[4]},"exemplars":[{"filtered_attributes":[{"key":"a","value":{"int_value":1}}],
          "as_int":"5","span_id":"01","trace_id":"02"}]}]}},
        {"name":"s","summary":{"data_points":[{"quantile_values":[{"quantile":0.9,"value":2}]}]}},
        {"name":"g","sum":{"data_points":[{"as_double":"NaN"}],"is_monotonic":false}}
    ]}]}]}"#;
    let request = decode_metrics_json(body.as_bytes()).unwrap();
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    let Some(metric::Data::ExponentialHistogram(eh)) = &metrics[0].data else {
        panic!("{:?}", metrics[0])
    };
    assert_eq!(eh.aggregation_temporality, 1);
    let point = &eh.data_points[0];
    assert_eq!(
        (
            point.start_time_unix_nano,
            point.time_unix_nano,
            point.zero_count
        ),
        (1, 2, 3)
    );
    assert_eq!(point.zero_threshold, 0.5);
    assert_eq!(point.positive.as_ref().unwrap().bucket_counts, vec![4]);
    let exemplar = &point.exemplars[0];
    assert_eq!(exemplar.filtered_attributes, vec![kv("a", int_value(1))]);
    assert_eq!(exemplar.value, Some(exemplar::Value::AsInt(5)));
    assert_eq!(
        (exemplar.span_id.as_slice(), exemplar.trace_id.as_slice()),
        (&[1u8][..], &[2u8][..])
    );
    let Some(metric::Data::Summary(summary)) = &metrics[1].data else {
        panic!("{:?}", metrics[1])
    };
    assert_eq!(
        summary.data_points[0].quantile_values,
        vec![ValueAtQuantile {
            quantile: 0.9,
            value: 2.0
        }]
    );
    let Some(metric::Data::Sum(sum)) = &metrics[2].data else {
        panic!("{:?}", metrics[2])
    };
    let Some(number_data_point::Value::AsDouble(nan)) = sum.data_points[0].value else {
        panic!("{sum:?}")
    };
    assert!(nan.is_nan());
}

#[test]
fn decodes_resource_entity_refs() {
    let body = r#"{"resourceLogs":[{"resource":{"entityRefs":[{"schemaUrl":"s","type":"service",
        "idKeys":["service.name"],"description_keys":["a","b"]}]}}]}"#;
    let request = decode_logs_json(body.as_bytes()).unwrap();
    let resource = request.resource_logs[0].resource.as_ref().unwrap();
    assert_eq!(
        resource.entity_refs,
        vec![EntityRef {
            schema_url: "s".into(),
            r#type: "service".into(),
            id_keys: vec!["service.name".into()],
            description_keys: vec!["a".into(), "b".into()],
        }]
    );
}

type Decoder = fn(&[u8]) -> Result<()>;

const LOGS: Decoder = |body| decode_logs_json(body).map(drop);
const TRACES: Decoder = |body| decode_traces_json(body).map(drop);
const METRICS: Decoder = |body| decode_metrics_json(body).map(drop);

#[test]
fn reports_shape_errors_with_their_path() {
    let record = "resourceLogs[0].scopeLogs[0].logRecords[0]";
    let span = "resourceSpans[0].scopeSpans[0].spans[0]";
    let metric = "resourceMetrics[0].scopeMetrics[0].metrics[0]";
    let logs_with = |record: &str| one_record(record);
    let spans_with =
        |span: &str| format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{span}]}}]}}]}}"#);
    let metrics_with = |metric: &str| {
        format!(r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{metric}]}}]}}]}}"#)
    };
    let cases: &[(Decoder, String, String, &str)] = &[
        (
            LOGS,
            "[]".into(),
            "$".into(),
            "expected an object, found an array",
        ),
        (
            TRACES,
            "\"spans\"".into(),
            "$".into(),
            "expected an object, found a string",
        ),
        (
            METRICS,
            "42".into(),
            "$".into(),
            "expected an object, found a number",
        ),
        (
            LOGS,
            "null".into(),
            "$".into(),
            "expected an object, found null",
        ),
        (
            LOGS,
            r#"{"resourceLogs":"nope"}"#.into(),
            "resourceLogs".into(),
            "expected an array, found a string",
        ),
        (
            LOGS,
            r#"{"resourceLogs":[[]]}"#.into(),
            "resourceLogs[0]".into(),
            "expected an object, found an array",
        ),
        (
            LOGS,
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{},{},{"traceId":"zz"}]}]}]}"#.into(),
            "resourceLogs[0].scopeLogs[0].logRecords[2].traceId".into(),
            "invalid hex: unexpected character 'z' at offset 0",
        ),
        (
            LOGS,
            logs_with(r#"{"spanId":"abc"}"#),
            format!("{record}.spanId"),
            "invalid hex: odd number of digits",
        ),
        (
            LOGS,
            logs_with(r#"{"span_id":12}"#),
            format!("{record}.span_id"),
            "expected a hex string, found a number",
        ),
        (
            LOGS,
            logs_with(r#"{"timeUnixNano":"soon"}"#),
            format!("{record}.timeUnixNano"),
            "invalid integer \"soon\"",
        ),
        (
            LOGS,
            logs_with(r#"{"timeUnixNano":1.5}"#),
            format!("{record}.timeUnixNano"),
            "invalid integer 1.5",
        ),
        (
            LOGS,
            logs_with(r#"{"timeUnixNano":-1}"#),
            format!("{record}.timeUnixNano"),
            "integer -1 out of range",
        ),
        (
            LOGS,
            logs_with(r#"{"timeUnixNano":true}"#),
            format!("{record}.timeUnixNano"),
            "expected an integer, found a boolean",
        ),
        (
            LOGS,
            logs_with(r#"{"flags":-1}"#),
            format!("{record}.flags"),
            "integer -1 out of range",
        ),
        (
            LOGS,
            logs_with(r#"{"droppedAttributesCount":4294967296}"#),
            format!("{record}.droppedAttributesCount"),
            "integer 4294967296 out of range",
        ),
        (
            LOGS,
            logs_with(r#"{"severityNumber":"SEVERITY_NUMBER_LOUD"}"#),
            format!("{record}.severityNumber"),
            "unknown enum value \"SEVERITY_NUMBER_LOUD\"",
        ),
        (
            LOGS,
            logs_with(r#"{"severityText":9}"#),
            format!("{record}.severityText"),
            "expected a string, found a number",
        ),
        (
            LOGS,
            logs_with(r#"{"attributes":{}}"#),
            format!("{record}.attributes"),
            "expected an array, found an object",
        ),
        (
            LOGS,
            logs_with(r#"{"attributes":[{"key":"a","value":{"intValue":"12x"}}]}"#),
            format!("{record}.attributes[0].value.intValue"),
            "invalid integer \"12x\"",
        ),
        (
            LOGS,
            logs_with(r#"{"attributes":[{"key":"a","value":"plain"}]}"#),
            format!("{record}.attributes[0].value"),
            "expected an object, found a string",
        ),
        (
            LOGS,
            logs_with(r#"{"body":{"kvlistValue":{"values":[{"key":1}]}}}"#),
            format!("{record}.body.kvlistValue.values[0].key"),
            "expected a string, found a number",
        ),
        (
            LOGS,
            logs_with(r#"{"body":{"arrayValue":{"values":[{},{"boolValue":"true"}]}}}"#),
            format!("{record}.body.arrayValue.values[1].boolValue"),
            "expected a boolean, found a string",
        ),
        (
            LOGS,
            logs_with(r#"{"body":{"bytesValue":"a!=="}}"#),
            format!("{record}.body.bytesValue"),
            "invalid base64",
        ),
        (
            LOGS,
            logs_with(r#"{"body":{"doubleValue":"nan"}}"#),
            format!("{record}.body.doubleValue"),
            "invalid double \"nan\"",
        ),
        (
            LOGS,
            logs_with(r#"{"body":{"doubleValue":[]}}"#),
            format!("{record}.body.doubleValue"),
            "expected a number, found an array",
        ),
        (
            LOGS,
            r#"{"resourceLogs":[{"resource":{"droppedAttributesCount":"x"}}]}"#.into(),
            "resourceLogs[0].resource.droppedAttributesCount".into(),
            "invalid integer \"x\"",
        ),
        (
            LOGS,
            r#"{"resource_logs":[{"scope_logs":[{"scope":{"name":["x"]}}]}]}"#.into(),
            "resource_logs[0].scope_logs[0].scope.name".into(),
            "expected a string, found an array",
        ),
        (
            TRACES,
            spans_with(r#"{"kind":"SPAN_KIND_SIDEWAYS"}"#),
            format!("{span}.kind"),
            "unknown enum value \"SPAN_KIND_SIDEWAYS\"",
        ),
        (
            TRACES,
            spans_with(r#"{"parentSpanId":"0g"}"#),
            format!("{span}.parentSpanId"),
            "invalid hex: unexpected character 'g' at offset 1",
        ),
        (
            TRACES,
            spans_with(r#"{"links":[{},{"traceId":"x"}]}"#),
            format!("{span}.links[1].traceId"),
            "invalid hex: odd number of digits",
        ),
        (
            TRACES,
            spans_with(r#"{"events":[{"name":false}]}"#),
            format!("{span}.events[0].name"),
            "expected a string, found a boolean",
        ),
        (
            TRACES,
            spans_with(r#"{"status":{"code":"BROKEN"}}"#),
            format!("{span}.status.code"),
            "unknown enum value \"BROKEN\"",
        ),
        (
            TRACES,
            spans_with(r#"{"status":[]}"#),
            format!("{span}.status"),
            "expected an object, found an array",
        ),
        (
            METRICS,
            metrics_with(r#"{"histogram":{"dataPoints":[{"bucketCounts":["1","x"]}]}}"#),
            format!("{metric}.histogram.dataPoints[0].bucketCounts[1]"),
            "invalid integer \"x\"",
        ),
        (
            METRICS,
            metrics_with(r#"{"histogram":{"dataPoints":[{"bucketCounts":[1,null]}]}}"#),
            format!("{metric}.histogram.dataPoints[0].bucketCounts[1]"),
            "expected an integer, found null",
        ),
        (
            METRICS,
            metrics_with(r#"{"sum":{"isMonotonic":"yes"}}"#),
            format!("{metric}.sum.isMonotonic"),
            "expected a boolean, found a string",
        ),
        (
            METRICS,
            metrics_with(
                r#"{"sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_SOMETIMES"}}"#,
            ),
            format!("{metric}.sum.aggregationTemporality"),
            "unknown enum value \"AGGREGATION_TEMPORALITY_SOMETIMES\"",
        ),
        (
            METRICS,
            metrics_with(r#"{"gauge":{"dataPoints":[{"exemplars":[{"spanId":"q"}]}]}}"#),
            format!("{metric}.gauge.dataPoints[0].exemplars[0].spanId"),
            "invalid hex: odd number of digits",
        ),
        (
            METRICS,
            metrics_with(r#"{"exponentialHistogram":{"dataPoints":[{"scale":2147483648}]}}"#),
            format!("{metric}.exponentialHistogram.dataPoints[0].scale"),
            "integer 2147483648 out of range",
        ),
        (
            METRICS,
            metrics_with(r#"{"summary":{"dataPoints":[{"quantileValues":[{"value":"lots"}]}]}}"#),
            format!("{metric}.summary.dataPoints[0].quantileValues[0].value"),
            "invalid double \"lots\"",
        ),
    ];
    for (decode, json, path, message) in cases {
        match decode(json.as_bytes()) {
            Err(DecodeError::JsonShape {
                path: got_path,
                message: got_message,
            }) => {
                assert_eq!(
                    (got_path.as_str(), got_message.as_str()),
                    (path.as_str(), *message),
                    "{json}"
                );
            }
            other => panic!("{json}: expected a shape error at {path}, got {other:?}"),
        }
    }
}

#[test]
fn shape_error_message_reads_well() {
    let err = LOGS(one_record(r#"{},{},{"traceId":"xyzw"}"#).as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid otlp/json at resourceLogs[0].scopeLogs[0].logRecords[2].traceId: \
         invalid hex: unexpected character 'x' at offset 0"
    );
}

#[test]
fn shortens_long_values_in_messages() {
    let long = one_record(&format!(r#"{{"timeUnixNano":"{}"}}"#, "é".repeat(100)));
    let Err(DecodeError::JsonShape { message, .. }) = LOGS(long.as_bytes()) else {
        panic!("expected a shape error");
    };
    // 64 bytes at most, cut at a character boundary.
    assert_eq!(message, format!("invalid integer \"{}…", "é".repeat(31)));
}

#[test]
fn reports_malformed_json() {
    for json in [
        "",
        "{",
        r#"{"resourceLogs":[}"#,
        "{} trailing",
        r#"{"a":1,}"#,
        "nul",
    ] {
        assert!(
            matches!(LOGS(json.as_bytes()), Err(DecodeError::Json(_))),
            "{json:?}"
        );
    }
}

#[test]
fn accepts_empty_and_unknown_documents() {
    for json in [
        "{}",
        r#"{"resourceLogs":[]}"#,
        r#"{"resourceLogs":null}"#,
        r#"{"partialSuccess":{}}"#,
        " {} \n",
    ] {
        assert_eq!(
            decode_logs_json(json.as_bytes()).unwrap(),
            ExportLogsServiceRequest::default(),
            "{json}"
        );
    }
}

/// A body AnyValue nesting `levels` key-value lists, each 4 JSON levels deep.
fn nested_kvlist(levels: usize) -> String {
    let mut json = r#"{"stringValue":"leaf"}"#.to_owned();
    for _ in 0..levels {
        json = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{json}}}]}}}}"#);
    }
    json
}

#[test]
fn decodes_deeply_nested_values() {
    let body = decode_body(&nested_kvlist(100)).unwrap().unwrap();
    let mut levels = 0;
    let mut value = &body;
    while let Some(any_value::Value::KvlistValue(list)) = &value.value {
        value = list.values[0].value.as_ref().unwrap();
        levels += 1;
    }
    assert_eq!(levels, 100);
    assert_eq!(value, &string_value("leaf"));
    // The record's body sits 8 levels deep and each list adds 4: 126 lists
    // are the most that fit in 512 levels.
    assert!(decode_body(&nested_kvlist(126)).is_ok());
    assert!(matches!(
        decode_body(&nested_kvlist(127)),
        Err(DecodeError::TooDeep(512))
    ));
}

#[test]
fn enforces_the_nesting_limit() {
    // Nesting in an ignored field still counts; brackets in strings do not.
    let nested = |depth: usize| {
        // The document down to the record is 7 levels deep.
        let inner = depth - 7;
        one_record(&format!(
            r#"{{"x":{}{}}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        ))
    };
    assert!(decode_logs_json(nested(MAX_DEPTH).as_bytes()).is_ok());
    assert!(matches!(
        decode_logs_json(nested(MAX_DEPTH + 1).as_bytes()),
        Err(DecodeError::TooDeep(512))
    ));
    assert!(matches!(
        decode_logs_json("[".repeat(100_000).as_bytes()),
        Err(DecodeError::TooDeep(512))
    ));
    let brackets_in_strings = one_record(&format!(
        r#"{{"severityText":"{}\"{}","body":{{"stringValue":"\\"}}}}"#,
        "[{".repeat(1000),
        "[".repeat(1000)
    ));
    let record = decode_record_from(&brackets_in_strings);
    assert_eq!(
        record.severity_text,
        format!("{}\"{}", "[{".repeat(1000), "[".repeat(1000))
    );
    assert_eq!(record.body, Some(string_value("\\")));
}

fn decode_record_from(json: &str) -> LogRecord {
    let request = decode_logs_json(json.as_bytes()).unwrap();
    records(&request)[0].clone()
}

#[test]
fn replaces_invalid_utf8() {
    let mut body = one_record(
        r#"{"body":{"stringValue":"bad ?? byte"},"attributes":[{"key":"k?","value":{}}]}"#,
    )
    .into_bytes();
    for b in body.iter_mut().filter(|b| **b == b'?') {
        *b = 0xff;
    }
    let record = decode_record_from(&String::from_utf8_lossy(&body));
    let direct = records(&decode_logs_json(&body).unwrap())[0].clone();
    assert_eq!(direct, record);
    assert_eq!(direct.body, Some(string_value("bad \u{fffd}\u{fffd} byte")));
    assert_eq!(direct.attributes[0].key, "k\u{fffd}");
}

#[test]
fn decodes_base64() {
    let cases: [(&str, Option<&[u8]>); 14] = [
        ("", Some(b"")),
        ("Zg==", Some(b"f")),
        ("Zg", Some(b"f")),
        ("Zm8=", Some(b"fo")),
        ("Zm9v", Some(b"foo")),
        ("Zm9vYmFy", Some(b"foobar")),
        ("/+8=", Some(&[0xff, 0xef])),
        ("_-8", Some(&[0xff, 0xef])),
        ("Z", None),
        ("Zg=", None),
        ("Zg===", None),
        ("Zm9v====", None),
        ("Zg=a", None),
        ("Zm 9v", None),
    ];
    for (input, expected) in cases {
        assert_eq!(decode_base64(input).as_deref(), expected, "{input:?}");
    }
}
