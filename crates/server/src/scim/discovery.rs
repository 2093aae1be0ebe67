//! What the SCIM surface says about itself (RFC 7643 §5–7):
//! `ServiceProviderConfig`, `ResourceTypes` and `Schemas`, describing
//! exactly what is served: the attributes listed are the ones Allot keeps
//! and returns; the rest of a provider's body is ignored.

use serde::Serialize;

use allot_domain::scim::group::GROUP_SCHEMA;
use allot_domain::scim::user::{LICENSING_SCHEMA, USER_SCHEMA};

use crate::app::scim::{ListResponse, LIST_RESPONSE_SCHEMA, MAX_PAGE};

const SPC_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

#[derive(Debug, Serialize)]
pub struct Supported {
    pub supported: bool,
}

#[derive(Debug, Serialize)]
pub struct BulkSupport {
    pub supported: bool,
    #[serde(rename = "maxOperations")]
    pub max_operations: u32,
    #[serde(rename = "maxPayloadSize")]
    pub max_payload_size: u32,
}

#[derive(Debug, Serialize)]
pub struct FilterSupport {
    pub supported: bool,
    #[serde(rename = "maxResults")]
    pub max_results: i64,
}

#[derive(Debug, Serialize)]
pub struct AuthScheme {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub primary: bool,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    #[serde(rename = "resourceType")]
    pub resource_type: &'static str,
    pub location: String,
}

#[derive(Debug, Serialize)]
pub struct ServiceProviderConfig {
    pub schemas: [&'static str; 1],
    pub patch: Supported,
    pub bulk: BulkSupport,
    pub filter: FilterSupport,
    #[serde(rename = "changePassword")]
    pub change_password: Supported,
    pub sort: Supported,
    pub etag: Supported,
    #[serde(rename = "authenticationSchemes")]
    pub authentication_schemes: Vec<AuthScheme>,
    pub meta: Meta,
}

pub fn service_provider_config(base: &str) -> ServiceProviderConfig {
    ServiceProviderConfig {
        schemas: [SPC_SCHEMA],
        patch: Supported { supported: true },
        bulk: BulkSupport {
            supported: false,
            max_operations: 0,
            max_payload_size: 0,
        },
        filter: FilterSupport {
            supported: true,
            max_results: MAX_PAGE,
        },
        change_password: Supported { supported: false },
        sort: Supported { supported: false },
        etag: Supported { supported: true },
        authentication_schemes: vec![AuthScheme {
            kind: "oauthbearertoken",
            name: "Bearer token",
            description: "An Allot API token of role scim, bound to this organisation (created on the org's Identity provisioning page).",
            primary: true,
        }],
        meta: Meta {
            resource_type: "ServiceProviderConfig",
            location: format!("{base}/ServiceProviderConfig"),
        },
    }
}

#[derive(Debug, Serialize)]
pub struct SchemaExtension {
    pub schema: &'static str,
    pub required: bool,
}

#[derive(Debug, Serialize)]
pub struct ResourceType {
    pub schemas: [&'static str; 1],
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub endpoint: &'static str,
    pub schema: &'static str,
    #[serde(rename = "schemaExtensions")]
    pub schema_extensions: Vec<SchemaExtension>,
    pub meta: Meta,
}

pub fn resource_types(base: &str) -> Vec<ResourceType> {
    vec![
        ResourceType {
            schemas: [RESOURCE_TYPE_SCHEMA],
            id: "User",
            name: "User",
            description: "A user of the organisation (an Allot user): userName is its email.",
            endpoint: "/Users",
            schema: USER_SCHEMA,
            schema_extensions: vec![SchemaExtension {
                schema: LICENSING_SCHEMA,
                required: false,
            }],
            meta: Meta {
                resource_type: "ResourceType",
                location: format!("{base}/ResourceTypes/User"),
            },
        },
        ResourceType {
            schemas: [RESOURCE_TYPE_SCHEMA],
            id: "Group",
            name: "Group",
            description: "A group of the organisation (an Allot group): its members are users.",
            endpoint: "/Groups",
            schema: GROUP_SCHEMA,
            schema_extensions: vec![],
            meta: Meta {
                resource_type: "ResourceType",
                location: format!("{base}/ResourceTypes/Group"),
            },
        },
    ]
}

/// One attribute of a schema.
#[derive(Debug, Serialize)]
pub struct Attribute {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(rename = "multiValued")]
    pub multi_valued: bool,
    pub description: &'static str,
    pub required: bool,
    #[serde(rename = "caseExact")]
    pub case_exact: bool,
    pub mutability: &'static str,
    pub returned: &'static str,
    pub uniqueness: &'static str,
    #[serde(rename = "subAttributes", skip_serializing_if = "Vec::is_empty")]
    pub sub_attributes: Vec<Attribute>,
    #[serde(rename = "canonicalValues", skip_serializing_if = "Vec::is_empty")]
    pub canonical_values: Vec<&'static str>,
    #[serde(rename = "referenceTypes", skip_serializing_if = "Vec::is_empty")]
    pub reference_types: Vec<&'static str>,
}

fn attr(name: &'static str, kind: &'static str, description: &'static str) -> Attribute {
    Attribute {
        name,
        kind,
        multi_valued: false,
        description,
        required: false,
        case_exact: false,
        mutability: "readWrite",
        returned: "default",
        uniqueness: "none",
        sub_attributes: vec![],
        canonical_values: vec![],
        reference_types: vec![],
    }
}

/// ISO 3166-1 alpha-2: the values `usageLocation` takes.
const COUNTRY_CODES: &str =
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI \
GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC \
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA \
PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH \
TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

#[derive(Debug, Serialize)]
pub struct Schema {
    pub schemas: [&'static str; 1],
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: Vec<Attribute>,
    pub meta: Meta,
}

pub fn schemas(base: &str) -> Vec<Schema> {
    let user_name = Attribute {
        required: true,
        uniqueness: "server",
        ..attr(
            "userName",
            "string",
            "The user's email address: unique in the organisation, compared without case.",
        )
    };
    let name = Attribute {
        sub_attributes: vec![
            attr("formatted", "string", "The full name, as it is shown."),
            attr("familyName", "string", "The family name."),
            attr("givenName", "string", "The given name."),
        ],
        ..attr("name", "complex", "The user's name.")
    };
    // Every Allot user has an email: when userName is no address, the
    // primary one of these is it (so a provider must send one or the other).
    let emails = Attribute {
        multi_valued: true,
        required: true,
        sub_attributes: vec![
            Attribute {
                required: true,
                ..attr("value", "string", "An email address.")
            },
            Attribute {
                canonical_values: vec!["work", "home", "other"],
                ..attr("type", "string", "What the address is for.")
            },
            attr("primary", "boolean", "Whether this is the primary address."),
        ],
        ..attr("emails", "complex", "The user's email addresses.")
    };
    vec![
        Schema {
            schemas: [SCHEMA_SCHEMA],
            id: USER_SCHEMA,
            name: "User",
            description: "A user of the organisation.",
            attributes: vec![
                user_name,
                name,
                attr("displayName", "string", "The name shown for the user."),
                Attribute {
                    required: true,
                    ..attr(
                        "active",
                        "boolean",
                        "False makes the user inactive (its licences are released). Left out of a new user, it is true; it cannot be removed, only replaced.",
                    )
                },
                emails,
            ],
            meta: Meta {
                resource_type: "Schema",
                location: format!("{base}/Schemas/{USER_SCHEMA}"),
            },
        },
        Schema {
            schemas: [SCHEMA_SCHEMA],
            id: GROUP_SCHEMA,
            name: "Group",
            description: "A group of the organisation.",
            attributes: vec![
                Attribute {
                    required: true,
                    uniqueness: "server",
                    ..attr("displayName", "string", "The group's name: unique in the organisation.")
                },
                Attribute {
                    multi_valued: true,
                    sub_attributes: vec![
                        Attribute {
                            case_exact: true,
                            mutability: "immutable",
                            ..attr("value", "string", "The member user's id.")
                        },
                        Attribute {
                            kind: "reference",
                            mutability: "immutable",
                            reference_types: vec!["User"],
                            ..attr("$ref", "reference", "The member user's URI.")
                        },
                        Attribute {
                            mutability: "immutable",
                            canonical_values: vec!["User"],
                            ..attr("type", "string", "What the member is: a User.")
                        },
                    ],
                    ..attr("members", "complex", "The group's members: users.")
                },
            ],
            meta: Meta {
                resource_type: "Schema",
                location: format!("{base}/Schemas/{GROUP_SCHEMA}"),
            },
        },
        Schema {
            schemas: [SCHEMA_SCHEMA],
            id: LICENSING_SCHEMA,
            name: "Licensing",
            description: "What Allot's licence rules need to know of a user.",
            attributes: vec![Attribute {
                canonical_values: COUNTRY_CODES.split(' ').collect(),
                ..attr(
                    "usageLocation",
                    "string",
                    "Where the user uses its licences: an ISO 3166-1 alpha-2 country code such as SE.",
                )
            }],
            meta: Meta {
                resource_type: "Schema",
                location: format!("{base}/Schemas/{LICENSING_SCHEMA}"),
            },
        },
    ]
}

/// A discovery list: every item, one page.
pub fn listed<T>(items: Vec<T>) -> ListResponse<T> {
    ListResponse {
        schemas: vec![LIST_RESPONSE_SCHEMA],
        total_results: items.len(),
        start_index: 1,
        items_per_page: items.len(),
        resources: items,
    }
}
