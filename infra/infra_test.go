package infra_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/rotation"
)

// The Bicep cannot be compiled here, so these tests read its text and check
// what must agree with the code: function folders and their triggers, the app
// settings the binary reads, the event filter, the role definitions and who
// gets which role. Each check returns its problems; TestDeployment wants none
// for the files in this folder, and TestChecksCatchDisagreement proves each
// check fails on a deployment that disagrees.

// repoRoot is the module root, seen from this package's directory.
const repoRoot = ".."

// notDeployed is the one list of environment variables the binary reads
// that the deployment deliberately does not set, and why. Every other
// variable function/*.go reads must be an app setting (or one of its
// alternatives) and be listed in local.settings.json.example.
var notDeployed = map[string]string{
	"FUNCTIONS_CUSTOMHANDLER_PORT":    "the Functions host sets it for the custom handler",
	"IDENTITY_ENDPOINT":               "App Service sets it for managed identity",
	"IDENTITY_HEADER":                 "App Service sets it for managed identity",
	"AZURE_STORAGE_CONNECTION_STRING": "replay --dead-letter on a workstation, e.g. against Azurite",
	"EVENTGRID_KEY":                   "replay --republish and pull on a workstation",
	"EVENTGRID_NAMESPACE_ENDPOINT":    "pull on a workstation",
	"EVENTGRID_TOPIC":                 "pull on a workstation",
	"EVENTGRID_SUBSCRIPTION":          "pull on a workstation",
}

// alternatives are settings of which one is enough: the subscription map
// inline or in a file, and the host storage as a connection string or as
// an identity-based connection.
var alternatives = [][]string{
	{"ROTATION_TARGETS", "ROTATION_TARGETS_FILE"},
	{"AzureWebJobsStorage", "AzureWebJobsStorage__accountName", "AzureWebJobsStorage__blobServiceUri"},
}

// required returns the settings of names that must be set, each group of
// alternatives as one entry ("A or B"), with whether names sets it.
func required(read []string, set map[string]bool) map[string]bool {
	out := map[string]bool{}
	grouped := map[string]bool{}
	for _, g := range alternatives {
		if !slices.ContainsFunc(g, func(n string) bool { return slices.Contains(read, n) }) {
			continue
		}
		ok := false
		for _, n := range g {
			grouped[n] = true
			ok = ok || set[n]
		}
		out[strings.Join(g, " or ")] = ok
	}
	for _, n := range read {
		if _, skip := notDeployed[n]; !skip && !grouped[n] {
			out[n] = set[n]
		}
	}
	return out
}

// apiVersions is every resource type the deployment may declare and the API
// version checked against Azure's published resource reference (see
// docs/deploy.md, "Resource API versions").
var apiVersions = map[string]string{
	"Microsoft.ManagedIdentity/userAssignedIdentities":          "2024-11-30",
	"Microsoft.KeyVault/vaults":                                 "2026-05-15",
	"Microsoft.KeyVault/vaults/keys":                            "2026-05-15",
	"Microsoft.Authorization/roleDefinitions":                   "2022-04-01",
	"Microsoft.Authorization/roleAssignments":                   "2022-04-01",
	"Microsoft.Storage/storageAccounts":                         "2026-09-01",
	"Microsoft.Storage/storageAccounts/blobServices":            "2026-09-01",
	"Microsoft.Storage/storageAccounts/blobServices/containers": "2026-09-01",
	"Microsoft.OperationalInsights/workspaces":                  "2026-03-01",
	"Microsoft.Insights/components":                             "2020-02-02",
	"Microsoft.Web/serverfarms":                                 "2025-03-01",
	"Microsoft.Web/sites":                                       "2025-03-01",
	"Microsoft.FluidRelay/fluidRelayServers":                    "2022-06-01",
	"Microsoft.EventGrid/systemTopics":                          "2025-02-15",
	"Microsoft.EventGrid/systemTopics/eventSubscriptions":       "2025-02-15",
	"Microsoft.EventGrid/namespaces":                            "2025-02-15",
	"Microsoft.EventGrid/namespaces/topics":                     "2025-02-15",
	"Microsoft.EventGrid/namespaces/topics/eventSubscriptions":  "2025-02-15",
}

// builtInRoles is every built-in role main.bicep's var roles may name, by
// its key there, with the role definition ID Azure publishes (Azure
// built-in roles reference: Storage, Monitor, Security, Integration).
var builtInRoles = map[string]string{
	"storageBlobDataOwner":                "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", // Storage Blob Data Owner
	"storageBlobDataContributor":          "ba92f5b4-2d11-453d-a403-e96b0029c9fe", // Storage Blob Data Contributor
	"monitoringMetricsPublisher":          "3913510d-42f4-4e42-8a64-420c390055eb", // Monitoring Metrics Publisher
	"keyVaultCryptoServiceEncryptionUser": "e147488a-f6f5-4113-8e2d-b22465e65bf6", // Key Vault Crypto Service Encryption User
	"eventGridDataSender":                 "d5a91429-5739-47e2-a06b-3470a27159e7", // EventGrid Data Sender
	"eventGridDataReceiver":               "78cbd9e7-9798-4e2e-9b5a-547d9ebb31fb", // EventGrid Data Receiver
}

func TestDeployment(t *testing.T) {
	d := loadDeployment(t)
	in := loadRepo(t)

	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			for _, p := range c.run(d, in) {
				t.Error(p)
			}
		})
	}
}

type mutation struct {
	name  string
	check string
	old   string // text in main.bicep, or in file
	new   string
	want  string // part of one reported problem
	file  string // a file in modules/; empty: main.bicep
}

func TestChecksCatchDisagreement(t *testing.T) {
	tests := []mutation{
		{"setting missing", "app settings",
			"name: 'ROTATION_DEADLINE'", "name: 'ROTATION_DEADLINE_X'", "ROTATION_DEADLINE", ""},
		{"worker runtime as setting", "app settings",
			"name: 'LOG_FORMAT'", "name: 'FUNCTIONS_WORKER_RUNTIME'", "FUNCTIONS_WORKER_RUNTIME", ""},
		{"runtime not custom", "app settings",
			"name: 'custom'", "name: 'python'", "runtime", ""},
		{"function renamed", "functions",
			"/functions/KeyNewVersionCreated'", "/functions/KeyNewVersion'", "KeyNewVersion", ""},
		{"subject prefix", "event subscription",
			"advancedFilters: [", "subjectBeginsWith: 'cmk'\n  advancedFilters: [", "subjectBeginsWith", ""},
		{"subject operator", "event subscription",
			"operatorType: 'StringIn'", "operatorType: 'StringBeginsWith'", "StringIn", ""},
		{"event type", "event subscription",
			"var keyNewVersionCreated = 'Microsoft.KeyVault.KeyNewVersionCreated'",
			"var keyNewVersionCreated = 'Microsoft.KeyVault.KeyNearExpiry'", "KeyNearExpiry", ""},
		{"filter not from the map", "event subscription",
			"var keyNames = [for t in targets: t.keyName]", "var keyNames = ['cmk']", "keyNames", ""},
		{"retry shortened", "event subscription",
			"maxDeliveryAttempts: 30", "maxDeliveryAttempts: 3", "maxDeliveryAttempts", ""},
		{"dead letter with a key", "event subscription",
			"deadLetterWithResourceIdentity: {\n      identity: {\n        type: 'UserAssigned'\n        userAssignedIdentity: eventGridIdentity.id\n      }\n      deadLetterDestination",
			"deadLetterDestination: {}\n    other: {\n      identity: {\n        type: 'UserAssigned'\n        userAssignedIdentity: eventGridIdentity.id\n      }\n      deadLetterDestination",
			"deadLetterWithResourceIdentity", ""},
		{"extra data action", "role definitions",
			"'Microsoft.KeyVault/vaults/keys/read'\n", "'Microsoft.KeyVault/vaults/keys/read'\n          'Microsoft.KeyVault/vaults/keys/decrypt/action'\n", "decrypt", ""},
		{"wildcard action", "role definitions",
			"actions: []\n        notActions: []\n        dataActions: [\n          'Microsoft.KeyVault/vaults/keys/read'",
			"actions: [\n          'Microsoft.KeyVault/*'\n        ]\n        notActions: []\n        dataActions: [\n          'Microsoft.KeyVault/vaults/keys/read'",
			"Microsoft.KeyVault/*", ""},
		{"rotator gets more", "identities",
			"principalId: hostIdentity.properties.principalId\n    principalType: 'ServicePrincipal'\n    description: 'Functions host: AzureWebJobsStorage",
			"principalId: rotatorIdentity.properties.principalId\n    principalType: 'ServicePrincipal'\n    description: 'Functions host: AzureWebJobsStorage",
			"storageBlobDataOwner", ""},
		{"lock role on the account", "identities",
			"name: guid(lockContainer.id, rotatorIdentity.id, roles.storageBlobDataContributor)\n  scope: lockContainer",
			"name: guid(lockContainer.id, rotatorIdentity.id, roles.storageBlobDataContributor)\n  scope: deadLetterStorage",
			"deadLetterStorage", ""},
		{"lock role owner", "identities",
			"roles.storageBlobDataContributor\n    )\n    principalId: rotatorIdentity.properties.principalId\n    principalType: 'ServicePrincipal'\n    description: 'cmkrotator: lease",
			"roles.storageBlobDataOwner\n    )\n    principalId: rotatorIdentity.properties.principalId\n    principalType: 'ServicePrincipal'\n    description: 'cmkrotator: lease",
			"storageBlobDataOwner", ""},
		{"lock container in host storage", "lock container",
			"parent: deadLetterBlobs\n  name: lockContainerName", "parent: hostBlobs\n  name: lockContainerName", "hostBlobs", ""},
		{"lock container public", "lock container",
			"name: lockContainerName\n  properties: {\n    publicAccess: 'None'", "name: lockContainerName\n  properties: {\n    publicAccess: 'Blob'", "publicAccess", ""},
		{"lock setting elsewhere", "lock container",
			"value: '${deadLetterStorage.properties.primaryEndpoints.blob}${lockContainerName}'",
			"value: '${deadLetterStorage.properties.primaryEndpoints.blob}${deadLetterContainerName}'", "ROTATION_LOCK_CONTAINER", ""},
		{"lock setting missing", "app settings",
			"name: 'ROTATION_LOCK_CONTAINER'", "name: 'ROTATION_LOCKS'", "ROTATION_LOCK_CONTAINER", ""},
		{"client id of the host", "identities",
			"value: rotatorIdentity.properties.clientId", "value: hostIdentity.properties.clientId", "AZURE_CLIENT_ID", ""},
		{"purge protection off", "key vault",
			"enablePurgeProtection: true", "enablePurgeProtection: false", "enablePurgeProtection", ""},
		{"EC key allowed", "key vault",
			"  'RSA-HSM'\n])\nparam keyType", "  'RSA-HSM'\n  'EC'\n])\nparam keyType", "EC", ""},
		{"preview API version", "api versions",
			"Microsoft.EventGrid/systemTopics@2025-02-15", "Microsoft.EventGrid/systemTopics@2023-12-15-preview", "preview", ""},
		{"older API version", "api versions",
			"Microsoft.KeyVault/vaults@2026-05-15' =", "Microsoft.KeyVault/vaults@2025-05-01' =", "2026-05-15", ""},
		{"key reader role name per resource group only", "role definitions",
			"roleName: 'cmkrotator key metadata reader (${subscription().subscriptionId}, ${resourceGroup().name})'",
			"roleName: 'cmkrotator key metadata reader (${resourceGroup().name})'", "subscriptionId", ""},
		{"key reader role ID per resource group name only", "role definitions",
			"var keyReaderRoleName = guid(subscription().id, resourceGroup().id, 'cmkrotator-key-metadata-reader')",
			"var keyReaderRoleName = guid(resourceGroup().name, 'cmkrotator-key-metadata-reader')", "keyReaderRoleName", ""},
		{"Fluid Relay role name per resource group only", "role definitions",
			"roleName: 'cmkrotator Fluid Relay key rotator (${subscription().subscriptionId}, ${resourceGroup().name})'",
			"roleName: 'cmkrotator Fluid Relay key rotator (${resourceGroup().name})'", "subscriptionId", "fluidrelay.bicep"},
		{"Fluid Relay role ID without the subscription", "role definitions",
			"var rotatorRoleName = guid(subscription().id, resourceGroup().id, 'cmkrotator-fluid-relay-key-rotator')",
			"var rotatorRoleName = guid(resourceGroup().name, 'cmkrotator-fluid-relay-key-rotator')", "rotatorRoleName", "fluidrelay.bicep"},
		{"Fluid Relay role assignable everywhere", "role definitions",
			"assignableScopes: [\n      resourceGroup().id\n    ]", "assignableScopes: [\n      subscription().id\n    ]", "assignable", "fluidrelay.bicep"},
		{"Blob Data Owner ID", "identities",
			"storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'", "storageBlobDataOwner: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'", "storageBlobDataOwner", ""},
		{"Blob Data Contributor ID", "identities",
			"storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'", "storageBlobDataContributor: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'", "storageBlobDataContributor", ""},
		{"Metrics Publisher ID", "identities",
			"monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'", "monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055ec'", "monitoringMetricsPublisher", ""},
		{"Crypto Service Encryption User ID", "identities",
			"keyVaultCryptoServiceEncryptionUser: 'e147488a-f6f5-4113-8e2d-b22465e65bf6'", "keyVaultCryptoServiceEncryptionUser: '12338af0-0e69-4776-bea7-57ae8d297424'", "keyVaultCryptoServiceEncryptionUser", ""},
		{"Data Sender ID", "identities",
			"eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'", "eventGridDataSender: '1d8c3fe3-8864-474b-8749-01e3783e8157'", "eventGridDataSender", ""},
		{"Data Receiver ID", "identities",
			"eventGridDataReceiver: '78cbd9e7-9798-4e2e-9b5a-547d9ebb31fb'", "eventGridDataReceiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'", "eventGridDataReceiver", ""},
		{"unknown built-in role", "identities",
			"  eventGridDataReceiver: '78cbd9e7", "  keyVaultReader: '21090545-7ca7-4776-b22c-e363652d74d2'\n  eventGridDataReceiver: '78cbd9e7", "keyVaultReader", ""},
		{"pull subscription event type", "event subscription",
			"filtersConfiguration: {\n      includedEventTypes: [\n        keyNewVersionCreated\n      ]",
			"filtersConfiguration: {\n      includedEventTypes: [\n        'Microsoft.KeyVault.KeyNearExpiry'\n      ]", "filtersConfiguration", ""},
		{"pull subscription without event type", "event subscription",
			"filtersConfiguration: {\n      includedEventTypes: [\n        keyNewVersionCreated\n      ]\n    }",
			"filtersConfiguration: {}", "filtersConfiguration", ""},
		{"pull subscription pushes", "event subscription",
			"deliveryMode: 'Queue'", "deliveryMode: 'Push'", "Queue", ""},
		{"Fluid Relay module in this resource group", "fluid relay",
			"scope: resourceGroup(fluidRelayResourceGroup)", "scope: resourceGroup()", "resourceGroup(fluidRelayResourceGroup)", ""},
		{"Fluid Relay module without scope", "fluid relay",
			"  scope: resourceGroup(fluidRelayResourceGroup)\n", "", "resourceGroup(fluidRelayResourceGroup)", ""},
		{"rotator reads dead letters", "identities",
			"resource eventGridDeadLetterAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {\n  name: guid(deadLetterContainer.id, eventGridIdentity.id, roles.storageBlobDataContributor)\n  scope: deadLetterContainer\n  properties: {\n    roleDefinitionId: subscriptionResourceId(\n      'Microsoft.Authorization/roleDefinitions',\n      roles.storageBlobDataContributor\n    )\n    principalId: eventGridIdentity.properties.principalId",
			"resource eventGridDeadLetterAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {\n  name: guid(deadLetterContainer.id, eventGridIdentity.id, roles.storageBlobDataContributor)\n  scope: deadLetterContainer\n  properties: {\n    roleDefinitionId: subscriptionResourceId(\n      'Microsoft.Authorization/roleDefinitions',\n      roles.storageBlobDataContributor\n    )\n    principalId: rotatorIdentity.properties.principalId",
			"deadLetterContainer", ""},
		{"platform setting deployed", "app settings",
			"name: 'LOG_FORMAT'", "name: 'FUNCTIONS_CUSTOMHANDLER_PORT'", "FUNCTIONS_CUSTOMHANDLER_PORT", ""},
	}

	base := loadDeployment(t)
	in := loadRepo(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, name := base.main, "main.bicep"
			if tt.file != "" {
				src, name = base.modules[tt.file], "modules/"+tt.file
			}
			if !strings.Contains(src, tt.old) {
				t.Fatalf("%s does not contain %q; update the test", name, tt.old)
			}
			d := *base
			mutated := strings.Replace(src, tt.old, tt.new, 1)
			if tt.file == "" {
				d.main = mutated
			} else {
				d.modules = maps.Clone(base.modules)
				d.modules[tt.file] = mutated
			}
			d.resources = nil
			d.index()
			if d.err != nil {
				t.Fatalf("parse mutated main.bicep: %v", d.err)
			}

			got := runCheck(t, tt.check, &d, in)
			if len(got) == 0 {
				t.Fatalf("check %q: got no problem, want one mentioning %q", tt.check, tt.want)
			}
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("check %q: got %q, want a problem mentioning %q", tt.check, got, tt.want)
			}
		})
	}
}

func TestParseBicep(t *testing.T) {
	src := `// comment with { brace
resource a 'Microsoft.X/y@2020-01-01' = {
  name: 'it\'s {not} a brace'
  desc: 'esc \' }'
  nested: {
    v: '${a.id}/b'
  }
}
resource b 'Microsoft.X/y/z@2021-01-01' existing = [for i in range(0, 2): {
  /* } */
  name: 'b${i}'
}]
var list = [
  'one'
  two
]
`
	rs, err := parseResources("t.bicep", stripComments(src))
	if err != nil {
		t.Fatalf("parseResources: %v", err)
	}
	if got, want := len(rs), 2; got != want {
		t.Fatalf("got %d resources, want %d", got, want)
	}
	if got, want := rs[0].Type, "Microsoft.X/y"; got != want {
		t.Errorf("got type %q, want %q", got, want)
	}
	if !strings.Contains(rs[0].Body, "${a.id}/b") || !strings.HasSuffix(rs[0].Body, "}") {
		t.Errorf("got body %q, want the whole block", rs[0].Body)
	}
	if !rs[1].Existing || rs[1].Version != "2021-01-01" {
		t.Errorf("got %+v, want an existing resource at 2021-01-01", rs[1])
	}
	v, ok := varValue(stripComments(src), "list")
	if !ok {
		t.Fatal("varValue(list): not found")
	}
	if got, want := items(v), []string{"'one'", "two"}; !slices.Equal(got, want) {
		t.Errorf("got items %q, want %q", got, want)
	}
}

// ---------------------------------------------------------------------------
// The checks

type check struct {
	name string
	run  func(d *deployment, in repo) []string
}

var checks = []check{
	{"app settings", checkAppSettings},
	{"settings example", checkSettingsExample},
	{"functions", checkFunctions},
	{"event subscription", checkEventSubscription},
	{"role definitions", checkRoleDefinitions},
	{"identities", checkIdentities},
	{"fluid relay", checkFluidRelay},
	{"key vault", checkKeyVault},
	{"lock container", checkLockContainer},
	{"api versions", checkAPIVersions},
	{"parameters", checkParameters},
	{"deploy docs", checkDeployDocs},
}

func runCheck(t *testing.T, name string, d *deployment, in repo) []string {
	t.Helper()
	for _, c := range checks {
		if c.name == name {
			return c.run(d, in)
		}
	}
	t.Fatalf("no check %q", name)
	return nil
}

// checkAppSettings: every setting the binary reads is set, save those
// notDeployed names, which must not be; the runtime is the custom handler,
// declared where Flex Consumption wants it.
func checkAppSettings(d *deployment, in repo) []string {
	var problems []string
	set, err := d.appSettings()
	if err != nil {
		return []string{err.Error()}
	}

	for name, ok := range required(in.settings, set) {
		if !ok {
			problems = append(problems, fmt.Sprintf("app setting %s is read by the binary but not set", name))
		}
	}
	for name, why := range notDeployed {
		if set[name] {
			problems = append(problems, fmt.Sprintf("app setting %s must not be set: %s", name, why))
		}
	}
	sort.Strings(problems)
	if !set["AzureWebJobsStorage__accountName"] {
		problems = append(problems, "host storage (AzureWebJobsStorage__accountName) is not set")
	}
	if set["FUNCTIONS_WORKER_RUNTIME"] {
		problems = append(problems, "FUNCTIONS_WORKER_RUNTIME must not be an app setting on Flex Consumption")
	}

	site, ok := d.one("Microsoft.Web/sites")
	if !ok {
		return append(problems, "no Microsoft.Web/sites resource")
	}
	runtime, ok := block(site.Body, "runtime")
	if !ok || scalar(runtime, "name") != "'custom'" {
		problems = append(problems, "functionAppConfig.runtime.name is not 'custom'")
	}
	return problems
}

// checkSettingsExample: local.settings.json.example, the settings of a run
// under the Functions host on a workstation, lists every setting the binary
// reads, save those notDeployed names.
func checkSettingsExample(d *deployment, in repo) []string {
	var problems []string
	for name, ok := range required(in.settings, in.example) {
		if !ok {
			problems = append(problems, fmt.Sprintf("local.settings.json.example does not list %s, which the binary reads", name))
		}
	}
	sort.Strings(problems)
	return problems
}

// checkFunctions: every function folder has its trigger wired, and the
// deployment names no function that does not exist.
func checkFunctions(d *deployment, in repo) []string {
	var problems []string
	set, err := d.appSettings()
	if err != nil {
		return []string{err.Error()}
	}
	targets := d.functionDestinations()

	names := map[string]bool{}
	for _, f := range in.functions {
		names[f.Name] = true
		switch f.Trigger {
		case "eventGridTrigger":
			if !targets[f.Name] {
				problems = append(problems, fmt.Sprintf("function %s has an Event Grid trigger but no event subscription delivers to it", f.Name))
			}
		case "timerTrigger":
			if s, ok := strings.CutPrefix(f.Schedule, "%"); ok {
				s = strings.TrimSuffix(s, "%")
				if !set[s] {
					problems = append(problems, fmt.Sprintf("function %s takes its schedule from %s, which is not set", f.Name, s))
				}
			}
		case "httpTrigger":
			if strings.EqualFold(f.AuthLevel, "anonymous") {
				problems = append(problems, fmt.Sprintf("function %s is anonymous; the deployment expects function keys", f.Name))
			}
		default:
			problems = append(problems, fmt.Sprintf("function %s has trigger %q, which the deployment does not know", f.Name, f.Trigger))
		}
	}
	for name := range targets {
		if !names[name] {
			problems = append(problems, fmt.Sprintf("an event subscription delivers to function %s, which does not exist", name))
		}
	}
	sort.Strings(problems)
	return problems
}

// checkEventSubscription: the event type, an exact subject match built from
// the same map as ROTATION_TARGETS, retries and identity-based dead-lettering.
func checkEventSubscription(d *deployment, in repo) []string {
	var problems []string
	subs := d.all("Microsoft.EventGrid/systemTopics/eventSubscriptions")
	if len(subs) == 0 {
		return []string{"no Event Grid system topic subscription"}
	}

	for _, s := range subs {
		p := func(format string, a ...any) {
			problems = append(problems, s.Symbol+": "+fmt.Sprintf(format, a...))
		}
		filter, ok := d.resolveBlock(s.Body, "filter")
		if !ok {
			p("no filter")
			continue
		}
		types, _ := list(filter, "includedEventTypes")
		types = d.resolveItems(types)
		if !slices.Equal(types, []string{in.eventType}) {
			p("includedEventTypes is %q, want [%q]", types, in.eventType)
		}
		for _, prefix := range []string{"subjectBeginsWith", "subjectEndsWith"} {
			if strings.Contains(filter, prefix) {
				p("filter uses %s: a prefix or suffix is not an exact key name", prefix)
			}
		}
		problems = append(problems, checkSubjectFilter(d, s.Symbol, filter)...)

		retry, ok := d.resolveBlock(s.Body, "retryPolicy")
		if !ok || scalar(retry, "maxDeliveryAttempts") != "30" || scalar(retry, "eventTimeToLiveInMinutes") != "1440" {
			p("retryPolicy is not maxDeliveryAttempts 30, eventTimeToLiveInMinutes 1440")
		}

		dl, ok := block(s.Body, "deadLetterWithResourceIdentity")
		if !ok || strings.Count(s.Body, "deadLetterDestination:") != 1 {
			p("dead-lettering must use deadLetterWithResourceIdentity only")
		} else if id, _ := block(dl, "identity"); scalar(id, "type") != "'UserAssigned'" ||
			!strings.Contains(dl, "endpointType: 'StorageBlob'") {
			p("deadLetterWithResourceIdentity needs a user-assigned identity and a StorageBlob destination")
		}
	}

	// Pull delivery: the namespace topic gets what the forwarding
	// subscription above filters; its queue subscription keeps the same
	// event type only.
	pulls := d.all("Microsoft.EventGrid/namespaces/topics/eventSubscriptions")
	if len(pulls) == 0 {
		problems = append(problems, "no Event Grid namespace topic subscription for pull delivery")
	}
	for _, s := range pulls {
		p := func(format string, a ...any) {
			problems = append(problems, s.Symbol+": "+fmt.Sprintf(format, a...))
		}
		filters, _ := d.resolveBlock(s.Body, "filtersConfiguration")
		types, _ := list(filters, "includedEventTypes")
		if types = d.resolveItems(types); !slices.Equal(types, []string{in.eventType}) {
			p("filtersConfiguration.includedEventTypes is %q, want [%q]", types, in.eventType)
		}
		if dc, _ := block(s.Body, "deliveryConfiguration"); scalar(dc, "deliveryMode") != "'Queue'" {
			p("deliveryConfiguration.deliveryMode is %s, want 'Queue' (cmkrotator pull receives from a queue subscription)", scalar(dc, "deliveryMode"))
		}
	}
	return problems
}

func checkSubjectFilter(d *deployment, sym, filter string) []string {
	adv, ok := block(filter, "advancedFilters")
	if !ok {
		adv, _ = listBody(filter, "advancedFilters")
	}
	if scalar(adv, "operatorType") != "'StringIn'" {
		return []string{sym + ": the subject filter must be an advanced StringIn filter (exact match)"}
	}
	if !strings.EqualFold(scalar(adv, "key"), "'subject'") {
		return []string{sym + ": the StringIn filter must be on the subject (the key name)"}
	}
	values := scalar(adv, "values")
	if values != "keyNames" {
		return []string{sym + fmt.Sprintf(": StringIn values are %s, want keyNames", values)}
	}
	v, _ := varValue(d.main, "keyNames")
	if !regexp.MustCompile(`^\[\s*for\s+(\w+)\s+in\s+targets\s*:\s*(\w+)\.keyName\s*\]$`).MatchString(v) {
		return []string{sym + ": keyNames must be [for t in targets: t.keyName], the names in ROTATION_TARGETS"}
	}
	rt, _ := varValue(d.main, "rotationTargets")
	if !strings.Contains(rt, "in targets") || !strings.Contains(rt, "/keys/${t.keyName}") {
		return []string{sym + ": rotationTargets is not built from the same targets and key names"}
	}
	return nil
}

// checkRoleDefinitions: the custom roles list exactly the permissions the
// product needs.
func checkRoleDefinitions(d *deployment, in repo) []string {
	want := map[string]permissions{
		"cmkrotator Fluid Relay key rotator": {Actions: []string{
			"Microsoft.FluidRelay/fluidRelayServers/read",
			"Microsoft.FluidRelay/fluidRelayServers/write",
		}},
		"cmkrotator key metadata reader": {DataActions: []string{
			"Microsoft.KeyVault/vaults/keys/read",
		}},
	}

	var problems []string
	seen := map[string]bool{}
	for _, r := range d.all("Microsoft.Authorization/roleDefinitions") {
		name := unquote(scalar(r.Body, "roleName"))
		var key string
		for k := range want {
			if strings.HasPrefix(name, k) {
				key = k
			}
		}
		if key == "" {
			problems = append(problems, fmt.Sprintf("unexpected custom role %q", name))
			continue
		}
		seen[key] = true

		if raw := scalar(r.Body, "roleName"); !strings.Contains(raw, "${subscription().subscriptionId}") ||
			!strings.Contains(raw, "${resourceGroup().name}") {
			problems = append(problems, fmt.Sprintf("role %q: roleName %s must include ${subscription().subscriptionId} and ${resourceGroup().name}: "+
				"custom role names are unique in the tenant, and resource groups of one name exist in many subscriptions", key, raw))
		}
		idVar := scalar(r.Body, "name")
		src := d.main
		if r.File != "main.bicep" {
			src = d.modules[strings.TrimPrefix(r.File, "modules/")]
		}
		if id, ok := varValue(src, idVar); !ok || !strings.HasPrefix(id, "guid(") ||
			!strings.Contains(id, "subscription().id") && !strings.Contains(id, "subscription().subscriptionId") ||
			!strings.Contains(id, "resourceGroup().id") && !strings.Contains(id, "resourceGroup().name") {
			problems = append(problems, fmt.Sprintf("role %q: its ID %s = %s is not a guid() of the subscription and the resource group", key, idVar, id))
		}

		got := permissionsOf(r.Body)
		if !got.equal(want[key]) {
			problems = append(problems, fmt.Sprintf("role %q grants %+v, want exactly %+v", key, got, want[key]))
		}
		scopes, _ := list(r.Body, "assignableScopes")
		if !slices.Equal(scopes, []string{"resourceGroup().id"}) {
			problems = append(problems, fmt.Sprintf("role %q is assignable at %q, want only its resource group", key, scopes))
		}
	}
	for k := range want {
		if !seen[k] {
			problems = append(problems, fmt.Sprintf("custom role %q is missing", k))
		}
	}
	sort.Strings(problems)
	return problems
}

// checkIdentities: the rotator identity is AZURE_CLIENT_ID and holds exactly
// three grants (two here, one in the Fluid Relay module); Fluid Relay's
// identity holds the crypto role on the keys; every built-in role is named
// by the ID Azure publishes.
func checkIdentities(d *deployment, in repo) []string {
	var problems []string
	if v := d.settingValue("AZURE_CLIENT_ID"); v != "rotatorIdentity.properties.clientId" {
		problems = append(problems, fmt.Sprintf("AZURE_CLIENT_ID is %q, want the rotator identity's client ID", v))
	}

	got := d.grants("rotatorIdentity.properties.principalId")
	want := []grant{
		{Scope: "keys[i]", Role: "keyReaderRoleName"},
		{Scope: "lockContainer", Role: "roles.storageBlobDataContributor"},
	}
	if !slices.Equal(got, want) {
		problems = append(problems, fmt.Sprintf("rotator identity grants are %+v, want %+v", got, want))
	}
	if scalar(d.moduleParams("fluidRelay"), "rotatorPrincipalId") != "rotatorIdentity.properties.principalId" {
		problems = append(problems, "the Fluid Relay module does not grant its role to the rotator identity")
	}
	mod := d.modules["fluidrelay.bicep"]
	if n := strings.Count(mod, "principalId: rotatorPrincipalId"); n != 1 {
		problems = append(problems, fmt.Sprintf("the Fluid Relay module assigns %d roles to the rotator, want 1", n))
	}

	cmk := d.grants("cmkIdentity.properties.principalId")
	if want := []grant{{Scope: "keys[i]", Role: "roles.keyVaultCryptoServiceEncryptionUser"}}; !slices.Equal(cmk, want) {
		problems = append(problems, fmt.Sprintf("Fluid Relay CMK identity grants are %+v, want %+v", cmk, want))
	}

	roles, ok := varValue(d.main, "roles")
	if !ok {
		return append(problems, "main.bicep has no var roles")
	}
	declared := regexp.MustCompile(`(?m)^\s*(\w+):\s*'([^']*)'`).FindAllStringSubmatch(roles, -1)
	if len(declared) == 0 {
		problems = append(problems, "var roles names no built-in role")
	}
	for _, m := range declared {
		switch want, known := builtInRoles[m[1]]; {
		case !known:
			problems = append(problems, fmt.Sprintf("roles.%s (%s) is not a built-in role this test knows; check its ID and add it to builtInRoles", m[1], m[2]))
		case m[2] != want:
			problems = append(problems, fmt.Sprintf("roles.%s is %s, want the built-in role's ID %s", m[1], m[2], want))
		}
	}
	return problems
}

// checkFluidRelay: the module deploys into the servers' resource group, and
// a created server follows the CMK documentation's payload.
func checkFluidRelay(d *deployment, in repo) []string {
	var problems []string
	if scope := scalar(d.moduleBody("fluidRelay"), "scope"); scope != "resourceGroup(fluidRelayResourceGroup)" {
		problems = append(problems, fmt.Sprintf("the Fluid Relay module's scope is %q, want resourceGroup(fluidRelayResourceGroup): "+
			"its custom role is created and assigned where the servers are", scope))
	}
	s, ok := d.one("Microsoft.FluidRelay/fluidRelayServers")
	if !ok {
		return append(problems, "no Microsoft.FluidRelay/fluidRelayServers resource")
	}
	identity, _ := block(s.Body, "identity")
	if scalar(identity, "type") != "'UserAssigned'" || !strings.Contains(identity, "'${cmkIdentityId}': {}") {
		problems = append(problems, "server identity must be UserAssigned with the CMK identity")
	}
	cmk, ok := block(s.Body, "customerManagedKeyEncryption")
	if !ok {
		return append(problems, "no properties.encryption.customerManagedKeyEncryption")
	}
	kek, _ := block(cmk, "keyEncryptionKeyIdentity")
	if scalar(kek, "identityType") != "'UserAssigned'" || scalar(kek, "userAssignedIdentityResourceId") != "cmkIdentityId" {
		problems = append(problems, "keyEncryptionKeyIdentity must be UserAssigned with the CMK identity")
	}
	if scalar(cmk, "keyEncryptionKeyUrl") == "" {
		problems = append(problems, "no keyEncryptionKeyUrl")
	}
	if scalar(s.Body, "storagesku") == "" {
		problems = append(problems, "no properties.storagesku")
	}
	return problems
}

// checkKeyVault: RBAC, soft delete, purge protection; RSA keys that can wrap
// and unwrap, rotated before expiry with a notification.
func checkKeyVault(d *deployment, in repo) []string {
	var problems []string
	v, ok := d.symbol("vaultNew")
	if !ok {
		return []string{"no vaultNew resource"}
	}
	for _, p := range []string{"enableRbacAuthorization", "enableSoftDelete", "enablePurgeProtection"} {
		if scalar(v.Body, p) != "true" {
			problems = append(problems, "Key Vault "+p+" is not true")
		}
	}

	k, ok := d.symbol("keysNew")
	if !ok {
		return append(problems, "no keysNew resource")
	}
	ops, _ := list(k.Body, "keyOps")
	if !slices.Contains(ops, "'wrapKey'") || !slices.Contains(ops, "'unwrapKey'") {
		problems = append(problems, fmt.Sprintf("key operations %q lack wrapKey or unwrapKey", ops))
	}
	if allowed := d.allowed("keyType"); !slices.Equal(allowed, []string{"'RSA'", "'RSA-HSM'"}) {
		problems = append(problems, fmt.Sprintf("keyType allows %q; Fluid Relay accepts RSA and RSA-HSM only (EC cannot wrap)", allowed))
	}
	policy, _ := block(k.Body, "rotationPolicy")
	if !regexp.MustCompile(`timeBeforeExpiry:[^}]*\}\s*action:\s*\{\s*type:\s*'rotate'`).MatchString(policy) {
		problems = append(problems, "the rotation policy does not rotate before expiry")
	}
	if !strings.Contains(policy, "type: 'notify'") {
		problems = append(problems, "the rotation policy does not notify")
	}
	return problems
}

// checkLockContainer: the rotation lock container sits beside the
// dead-letter container, private, and ROTATION_LOCK_CONTAINER is its URL.
// (Who may use it is checkIdentities'.)
func checkLockContainer(d *deployment, in repo) []string {
	var problems []string
	c, ok := d.symbol("lockContainer")
	if !ok || c.Type != "Microsoft.Storage/storageAccounts/blobServices/containers" {
		return []string{"no blob container lockContainer"}
	}
	if p := scalar(c.Body, "parent"); p != "deadLetterBlobs" {
		problems = append(problems, fmt.Sprintf("lockContainer's parent is %q, want deadLetterBlobs (the dead-letter account)", p))
	}
	if name, _ := varValue(d.main, "lockContainerName"); scalar(c.Body, "name") != "lockContainerName" || name != "'cmkrotator-locks'" {
		problems = append(problems, fmt.Sprintf("lockContainer is not named lockContainerName = 'cmkrotator-locks' (var is %s)", name))
	}
	if p := scalar(c.Body, "publicAccess"); p != "'None'" {
		problems = append(problems, fmt.Sprintf("lockContainer publicAccess is %s, want 'None'", p))
	}
	want := "'${deadLetterStorage.properties.primaryEndpoints.blob}${lockContainerName}'"
	if v := d.settingValue("ROTATION_LOCK_CONTAINER"); v != want {
		problems = append(problems, fmt.Sprintf("ROTATION_LOCK_CONTAINER is %s, want %s", v, want))
	}
	return problems
}

// checkAPIVersions: every resource type at its checked, non-preview version.
func checkAPIVersions(d *deployment, in repo) []string {
	var problems []string
	for _, r := range d.resources {
		want, ok := apiVersions[r.Type]
		switch {
		case strings.Contains(r.Version, "preview"):
			problems = append(problems, fmt.Sprintf("%s %s uses preview API version %s", r.File, r.Symbol, r.Version))
		case !ok:
			problems = append(problems, fmt.Sprintf("%s %s: type %s has no checked API version", r.File, r.Symbol, r.Type))
		case r.Version != want:
			problems = append(problems, fmt.Sprintf("%s %s: %s@%s, checked version is %s", r.File, r.Symbol, r.Type, r.Version, want))
		}
	}
	return problems
}

// checkParameters: the example parameter file matches the template.
func checkParameters(d *deployment, in repo) []string {
	var problems []string
	if !regexp.MustCompile(`(?m)^using 'main\.bicep'`).MatchString(d.params) {
		problems = append(problems, "main.bicepparam does not use main.bicep")
	}
	declared := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^param\s+(\w+)\s+[\w\[\]]+(\s*=)?`).FindAllStringSubmatch(d.main, -1) {
		declared[m[1]] = true
		set := regexp.MustCompile(`(?m)^param\s+` + m[1] + `\s*=`).MatchString(d.params)
		if m[2] == "" && !set {
			problems = append(problems, "required parameter "+m[1]+" is not in main.bicepparam")
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^param\s+(\w+)\s*=`).FindAllStringSubmatch(d.params, -1) {
		if !declared[m[1]] {
			problems = append(problems, "main.bicepparam sets "+m[1]+", which main.bicep does not declare")
		}
	}
	return problems
}

// checkDeployDocs: the documented build produces the binary host.json runs,
// and the lock setting is explained.
func checkDeployDocs(d *deployment, in repo) []string {
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "deploy.md"))
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	build := "GOOS=linux GOARCH=amd64 go build -o " + in.executable
	if !strings.Contains(string(doc), build) {
		problems = append(problems, fmt.Sprintf("docs/deploy.md does not build with %q", build))
	}
	if !strings.Contains(string(doc), "param subscribeEvents = true") {
		problems = append(problems, "docs/deploy.md does not say to set param subscribeEvents = true in the parameter file")
	}
	if !strings.Contains(string(doc), "ROTATION_LOCK_CONTAINER") {
		problems = append(problems, "docs/deploy.md does not explain ROTATION_LOCK_CONTAINER")
	}
	return append(problems, checkDocAPIVersions(string(doc))...)
}

// checkDocAPIVersions: the table in docs/deploy.md, "Resource API
// versions", names for each resource type the version apiVersions checks.
// A row's first cell lists types, the first in full and the others
// relative to its namespace ("Microsoft.Web/serverfarms, sites").
func checkDocAPIVersions(doc string) []string {
	_, section, ok := strings.Cut(doc, "## Resource API versions")
	if !ok {
		return []string{`docs/deploy.md has no "Resource API versions" section`}
	}
	documented := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\| (Microsoft\.[^|]+?) \| ([0-9-]+(?:-preview)?) \|`).FindAllStringSubmatch(section, -1) {
		types := strings.Split(m[1], ", ")
		namespace, _, _ := strings.Cut(types[0], "/")
		for _, t := range types {
			if !strings.HasPrefix(t, "Microsoft.") {
				t = namespace + "/" + t
			}
			documented[t] = m[2]
		}
	}
	var problems []string
	for typ, want := range apiVersions {
		if got, ok := documented[typ]; !ok {
			problems = append(problems, fmt.Sprintf("docs/deploy.md lists no API version for %s", typ))
		} else if got != want {
			problems = append(problems, fmt.Sprintf("docs/deploy.md lists %s at %s, the template uses %s", typ, got, want))
		}
	}
	sort.Strings(problems)
	return problems
}

// ---------------------------------------------------------------------------
// The repository side

type function struct {
	Name      string
	Trigger   string
	AuthLevel string
	Schedule  string
}

type repo struct {
	functions  []function
	settings   []string        // every environment variable function/*.go reads
	example    map[string]bool // the names local.settings.json.example lists
	eventType  string
	executable string
}

func loadRepo(t *testing.T) repo {
	t.Helper()
	r := repo{eventType: rotation.TypeKeyNewVersionCreated}
	var err error
	if r.functions, err = readFunctions(); err != nil {
		t.Fatalf("read function folders: %v", err)
	}
	if r.settings, err = readSettings(filepath.Join(repoRoot, "function")); err != nil {
		t.Fatalf("read the settings the binary reads: %v", err)
	}
	if r.example, err = readExample(filepath.Join(repoRoot, "local.settings.json.example")); err != nil {
		t.Fatalf("read local.settings.json.example: %v", err)
	}
	if r.executable, err = readExecutable(); err != nil {
		t.Fatalf("read host.json: %v", err)
	}
	return r
}

func readFunctions() ([]function, error) {
	paths, err := filepath.Glob(filepath.Join(repoRoot, "*", "function.json"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no */function.json under %s", repoRoot)
	}
	var fs []function
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var fj struct {
			Bindings []struct {
				Type      string `json:"type"`
				Direction string `json:"direction"`
				AuthLevel string `json:"authLevel"`
				Schedule  string `json:"schedule"`
			} `json:"bindings"`
		}
		if err := json.Unmarshal(data, &fj); err != nil {
			return nil, fmt.Errorf("decode %s: %w", p, err)
		}
		f := function{Name: filepath.Base(filepath.Dir(p))}
		for _, b := range fj.Bindings {
			if strings.HasSuffix(b.Type, "Trigger") {
				f.Trigger, f.AuthLevel, f.Schedule = b.Type, b.AuthLevel, b.Schedule
			}
		}
		fs = append(fs, f)
	}
	return fs, nil
}

// readSettings returns, sorted, the environment variables the Go sources
// in dir (tests aside) read: the names given to getenv (the parameter
// settings.go passes around, or an env's getenv field), os.Getenv and
// os.LookupEnv. A name that is not a string literal or a string constant
// of the package is an error, since the deployment could not be checked
// against it.
func readSettings(dir string) ([]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("parse: %w", err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no Go sources in %s", dir)
	}

	consts := map[string]string{}
	for _, f := range files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						if v, ok := stringLit(vs.Values[i]); ok {
							consts[name.Name] = v
						}
					}
				}
			}
		}
	}

	seen := map[string]bool{}
	var errs []error
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !isEnvLookup(call.Fun) {
				return true
			}
			if len(call.Args) != 1 {
				errs = append(errs, fmt.Errorf("%s: environment lookup with %d arguments", fset.Position(call.Pos()), len(call.Args)))
				return true
			}
			name, ok := stringLit(call.Args[0])
			if id, isIdent := call.Args[0].(*ast.Ident); !ok && isIdent {
				name, ok = consts[id.Name]
			}
			if !ok {
				errs = append(errs, fmt.Errorf("%s: environment lookup of a computed name; read settings by literal names", fset.Position(call.Pos())))
				return true
			}
			seen[name] = true
			return true
		})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("no environment lookup in %s", dir)
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// isEnvLookup reports whether fun names a function that reads one
// environment variable: getenv, x.getenv, os.Getenv or os.LookupEnv.
func isEnvLookup(fun ast.Expr) bool {
	switch f := fun.(type) {
	case *ast.Ident:
		return f.Name == "getenv"
	case *ast.SelectorExpr:
		if f.Sel.Name == "getenv" {
			return true
		}
		pkg, ok := f.X.(*ast.Ident)
		return ok && pkg.Name == "os" && (f.Sel.Name == "Getenv" || f.Sel.Name == "LookupEnv")
	}
	return false
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	v, err := strconv.Unquote(lit.Value)
	return v, err == nil
}

// readExample returns the names under Values in a local.settings.json.
func readExample(path string) (map[string]bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ls struct {
		Values map[string]any `json:"Values"`
	}
	if err := json.Unmarshal(data, &ls); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	names := map[string]bool{}
	for k := range ls.Values {
		names[k] = true
	}
	return names, nil
}

func readExecutable() (string, error) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "host.json"))
	if err != nil {
		return "", err
	}
	var h struct {
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
		} `json:"customHandler"`
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return "", fmt.Errorf("decode: %w", err)
	}
	if h.CustomHandler.Description.DefaultExecutablePath == "" {
		return "", errors.New("no customHandler.description.defaultExecutablePath")
	}
	return h.CustomHandler.Description.DefaultExecutablePath, nil
}

// ---------------------------------------------------------------------------
// The Bicep side

type resource struct {
	File     string
	Symbol   string
	Type     string
	Version  string
	Existing bool
	Body     string // from the opening brace of the declaration to its match
}

type deployment struct {
	main      string            // main.bicep without comments
	modules   map[string]string // modules/*.bicep without comments, by file name
	params    string            // main.bicepparam without comments
	resources []resource        // declared (not existing) resources of every file
	err       error
}

func loadDeployment(t *testing.T) *deployment {
	t.Helper()
	read := func(p string) string {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		return stripComments(string(data))
	}

	d := &deployment{
		main:    read("main.bicep"),
		params:  read("main.bicepparam"),
		modules: map[string]string{},
	}
	paths, err := filepath.Glob(filepath.Join("modules", "*.bicep"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		d.modules[filepath.Base(p)] = read(p)
	}
	d.index()
	if d.err != nil {
		t.Fatalf("parse: %v", d.err)
	}
	return d
}

func (d *deployment) index() {
	files := map[string]string{"main.bicep": d.main}
	for name, src := range d.modules {
		files["modules/"+name] = src
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)

	for _, name := range names {
		rs, err := parseResources(name, files[name])
		if err != nil {
			d.err = errors.Join(d.err, err)
		}
		for _, r := range rs {
			if !r.Existing {
				d.resources = append(d.resources, r)
			}
		}
	}
}

func (d *deployment) all(typ string) []resource {
	var rs []resource
	for _, r := range d.resources {
		if r.Type == typ {
			rs = append(rs, r)
		}
	}
	return rs
}

func (d *deployment) one(typ string) (resource, bool) {
	rs := d.all(typ)
	if len(rs) != 1 {
		return resource{}, false
	}
	return rs[0], true
}

func (d *deployment) symbol(sym string) (resource, bool) {
	for _, r := range d.resources {
		if r.Symbol == sym {
			return r, true
		}
	}
	return resource{}, false
}

// appSettings returns the names in var appSettings.
func (d *deployment) appSettings() (map[string]bool, error) {
	v, ok := varValue(d.main, "appSettings")
	if !ok {
		return nil, errors.New("main.bicep has no var appSettings")
	}
	set := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bname:\s*'([^']+)'`).FindAllStringSubmatch(v, -1) {
		set[m[1]] = true
	}
	return set, nil
}

// settingValue returns the expression an app setting is set to.
func (d *deployment) settingValue(name string) string {
	v, _ := varValue(d.main, "appSettings")
	re := regexp.MustCompile(`name:\s*'` + regexp.QuoteMeta(name) + `'\s*value:\s*(.+)`)
	if m := re.FindStringSubmatch(v); m != nil {
		return strings.TrimSpace(m[1])
	}
	return ""
}

// functionDestinations returns the functions event subscriptions deliver to.
func (d *deployment) functionDestinations() map[string]bool {
	names := map[string]bool{}
	re := regexp.MustCompile(`/functions/(\w+)'`)
	for _, s := range d.all("Microsoft.EventGrid/systemTopics/eventSubscriptions") {
		dest, ok := block(s.Body, "destination")
		if !ok || scalar(dest, "endpointType") != "'AzureFunction'" {
			continue
		}
		for _, m := range re.FindAllStringSubmatch(dest, -1) {
			names[m[1]] = true
		}
	}
	return names
}

type grant struct {
	Scope string
	Role  string
}

// grants returns the scope and role of every role assignment in main.bicep
// whose principal is the given expression.
func (d *deployment) grants(principal string) []grant {
	var gs []grant
	for _, r := range d.resources {
		if r.Type != "Microsoft.Authorization/roleAssignments" || r.File != "main.bicep" {
			continue
		}
		if scalar(r.Body, "principalId") != principal {
			continue
		}
		role := ""
		if m := regexp.MustCompile(`roleDefinitionId:[^\n]*?(roles\.\w+|keyReaderRoleName)`).FindStringSubmatch(flatten(r.Body)); m != nil {
			role = m[1]
		}
		gs = append(gs, grant{Scope: scalar(r.Body, "scope"), Role: role})
	}
	slices.SortFunc(gs, func(a, b grant) int { return strings.Compare(a.Scope+a.Role, b.Scope+b.Role) })
	return gs
}

// moduleBody returns the body of a module declaration in main.bicep.
func (d *deployment) moduleBody(sym string) string {
	re := regexp.MustCompile(`(?m)^module\s+` + sym + `\s+'[^']+'\s*=`)
	loc := re.FindStringIndex(d.main)
	if loc == nil {
		return ""
	}
	open := strings.IndexByte(d.main[loc[1]:], '{')
	if open < 0 {
		return ""
	}
	end, err := matchBrace(d.main, loc[1]+open)
	if err != nil {
		return ""
	}
	return d.main[loc[1]+open : end+1]
}

// moduleParams returns the params block of a module declaration.
func (d *deployment) moduleParams(sym string) string {
	p, _ := block(d.moduleBody(sym), "params")
	return p
}

// allowed returns the @allowed values of a parameter.
func (d *deployment) allowed(param string) []string {
	re := regexp.MustCompile(`@allowed\(\[([^\]]*)\]\)\s*param\s+` + param + `\b`)
	m := re.FindStringSubmatch(d.main)
	if m == nil {
		return nil
	}
	return items("[" + m[1] + "]")
}

// resolveBlock returns an object property, following it to a variable when
// the property names one.
func (d *deployment) resolveBlock(body, prop string) (string, bool) {
	if b, ok := block(body, prop); ok {
		return b, true
	}
	if v := scalar(body, prop); regexp.MustCompile(`^\w+$`).MatchString(v) {
		return varValue(d.main, v)
	}
	return "", false
}

// resolveItems replaces variable names in a list by their string values.
func (d *deployment) resolveItems(xs []string) []string {
	out := make([]string, 0, len(xs))
	for _, x := range xs {
		if v, ok := varValue(d.main, x); ok {
			x = v
		}
		out = append(out, unquote(x))
	}
	return out
}

type permissions struct {
	Actions, NotActions, DataActions, NotDataActions []string
}

func permissionsOf(body string) permissions {
	get := func(name string) []string {
		xs, _ := list(body, name)
		out := make([]string, 0, len(xs))
		for _, x := range xs {
			out = append(out, unquote(x))
		}
		sort.Strings(out)
		return out
	}
	return permissions{get("actions"), get("notActions"), get("dataActions"), get("notDataActions")}
}

func (p permissions) equal(q permissions) bool {
	return slices.Equal(p.Actions, q.Actions) && slices.Equal(p.NotActions, q.NotActions) &&
		slices.Equal(p.DataActions, q.DataActions) && slices.Equal(p.NotDataActions, q.NotDataActions)
}

// ---------------------------------------------------------------------------
// Text helpers. Bicep strings are single-quoted with \ escapes; interpolation
// braces stay inside the quotes, so skipping strings keeps braces balanced.

var resourceDecl = regexp.MustCompile(`(?m)^resource\s+(\w+)\s+'([^'@]+)@([^']+)'\s*(existing\s*)?=`)

func parseResources(file, src string) ([]resource, error) {
	var rs []resource
	for _, m := range resourceDecl.FindAllStringSubmatchIndex(src, -1) {
		open := strings.IndexByte(src[m[1]:], '{')
		if open < 0 {
			return nil, fmt.Errorf("%s: resource %s has no body", file, src[m[2]:m[3]])
		}
		open += m[1]
		end, err := matchBrace(src, open)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", file, src[m[2]:m[3]], err)
		}
		rs = append(rs, resource{
			File:     file,
			Symbol:   src[m[2]:m[3]],
			Type:     src[m[4]:m[5]],
			Version:  src[m[6]:m[7]],
			Existing: m[8] >= 0,
			Body:     src[open : end+1],
		})
	}
	return rs, nil
}

// matchBrace returns the index of the bracket closing the one at open.
func matchBrace(src string, open int) (int, error) {
	depth := 0
	for i := open; i < len(src); i++ {
		switch c := src[i]; c {
		case '\'':
			j, err := skipString(src, i)
			if err != nil {
				return 0, err
			}
			i = j
		case '{', '[', '(':
			depth++
		case '}', ']', ')':
			depth--
			if depth == 0 {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("unbalanced bracket at offset %d", open)
}

// skipString returns the index of the quote closing the string at i.
func skipString(src string, i int) (int, error) {
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case '\\':
			j++
		case '\'':
			return j, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at offset %d", i)
}

// stripComments removes // and /* */ comments outside strings.
func stripComments(src string) string {
	var b strings.Builder
	for i := 0; i < len(src); i++ {
		switch {
		case src[i] == '\'':
			j, err := skipString(src, i)
			if err != nil {
				j = len(src) - 1
			}
			b.WriteString(src[i : j+1])
			i = j
		case strings.HasPrefix(src[i:], "//"):
			for i < len(src) && src[i] != '\n' {
				i++
			}
			if i < len(src) {
				b.WriteByte('\n')
			}
		case strings.HasPrefix(src[i:], "/*"):
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				return b.String()
			}
			i += end + 3
		default:
			b.WriteByte(src[i])
		}
	}
	return b.String()
}

// varValue returns the expression of a top-level var: a whole bracketed
// value, or the rest of the line.
func varValue(src, name string) (string, bool) {
	re := regexp.MustCompile(`(?m)^var\s+` + regexp.QuoteMeta(name) + `\s*=\s*`)
	loc := re.FindStringIndex(src)
	if loc == nil {
		return "", false
	}
	return value(src, loc[1]), true
}

// value returns the expression starting at i.
func value(src string, i int) string {
	if i < len(src) && strings.IndexByte("{[", src[i]) >= 0 {
		if end, err := matchBrace(src, i); err == nil {
			return src[i : end+1]
		}
	}
	line, _, _ := strings.Cut(src[i:], "\n")
	return strings.TrimSpace(line)
}

// propIndex returns where the value of the first property prop starts.
func propIndex(body, prop string) int {
	re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(prop) + `:\s*`)
	loc := re.FindStringIndex(body)
	if loc == nil {
		return -1
	}
	return loc[1]
}

// scalar returns the single-line value of a property, or "".
func scalar(body, prop string) string {
	i := propIndex(body, prop)
	if i < 0 {
		return ""
	}
	return value(body, i)
}

// block returns the object value of a property.
func block(body, prop string) (string, bool) {
	i := propIndex(body, prop)
	if i < 0 || i >= len(body) || body[i] != '{' {
		return listBody(body, prop)
	}
	return value(body, i), true
}

// listBody returns the array value of a property, brackets included.
func listBody(body, prop string) (string, bool) {
	i := propIndex(body, prop)
	if i < 0 || i >= len(body) || body[i] != '[' {
		return "", false
	}
	return value(body, i), true
}

// list returns the items of an array property.
func list(body, prop string) ([]string, bool) {
	v, ok := listBody(body, prop)
	if !ok {
		return nil, false
	}
	return items(v), true
}

// items splits a one-item-per-line Bicep array.
func items(v string) []string {
	v = strings.TrimSpace(v)
	v = strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
	var out []string
	for _, line := range strings.Split(v, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

func unquote(s string) string {
	return strings.TrimSuffix(strings.TrimPrefix(s, "'"), "'")
}

// flatten joins a multi-line call into one line.
func flatten(s string) string {
	return regexp.MustCompile(`\(\s+`).ReplaceAllString(regexp.MustCompile(`\s*\n\s*`).ReplaceAllString(s, " "), "(")
}

// TestSettingsFromSources: the settings checked are the ones the binary's
// sources read, so a new lookup there is caught by both setting checks,
// and sources that cannot be followed fail instead of passing.
func TestSettingsFromSources(t *testing.T) {
	d := loadDeployment(t)
	base := loadRepo(t)
	for _, check := range []string{"app settings", "settings example"} {
		if got := runCheck(t, check, d, base); len(got) != 0 {
			t.Fatalf("check %q on the repository: got %q, want no problem", check, got)
		}
	}

	tests := []struct {
		name string
		src  string // an extra file among copies of function/*.go
		want string // a setting both checks must report missing
	}{
		{"getenv parameter", `package main

func newSetting(getenv func(string) string) string { return getenv("ROTATION_NEW_SETTING") }
`, "ROTATION_NEW_SETTING"},
		{"env field", `package main

func (e env) newSetting() string { return e.getenv("ROTATION_FIELD_SETTING") }
`, "ROTATION_FIELD_SETTING"},
		{"os.LookupEnv of a constant", `package main

import "os"

const settingName = "ROTATION_CONST_SETTING"

func newSetting() (string, bool) { return os.LookupEnv(settingName) }
`, "ROTATION_CONST_SETTING"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copySources(t)
			if err := os.WriteFile(filepath.Join(dir, "zz_new.go"), []byte(tt.src), 0o644); err != nil {
				t.Fatal(err)
			}
			settings, err := readSettings(dir)
			if err != nil {
				t.Fatalf("readSettings: %v", err)
			}
			if !slices.Contains(settings, tt.want) {
				t.Fatalf("got settings %q, want them to include %s", settings, tt.want)
			}
			in := base
			in.settings = settings
			for _, check := range []string{"app settings", "settings example"} {
				got := runCheck(t, check, d, in)
				if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
					t.Errorf("check %q: got %q, want a problem naming %s", check, got, tt.want)
				}
			}
		})
	}

	t.Run("platform setting read", func(t *testing.T) {
		dir := copySources(t)
		src := "package main\n\nfunc header(getenv func(string) string) string { return getenv(\"IDENTITY_HEADER\") }\n"
		if err := os.WriteFile(filepath.Join(dir, "zz_new.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		settings, err := readSettings(dir)
		if err != nil {
			t.Fatalf("readSettings: %v", err)
		}
		in := base
		in.settings = settings
		for _, check := range []string{"app settings", "settings example"} {
			if got := runCheck(t, check, d, in); len(got) != 0 {
				t.Errorf("check %q: got %q, want none: %s is not deployed", check, got, "IDENTITY_HEADER")
			}
		}
	})

	t.Run("example misses a setting", func(t *testing.T) {
		in := base
		in.example = maps.Clone(base.example)
		delete(in.example, "ROTATION_LOCK_CONTAINER")
		got := runCheck(t, "settings example", d, in)
		if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, "ROTATION_LOCK_CONTAINER") }) {
			t.Errorf("got %q, want a problem naming ROTATION_LOCK_CONTAINER", got)
		}
	})

	t.Run("example misses both alternatives", func(t *testing.T) {
		in := base
		in.example = maps.Clone(base.example)
		delete(in.example, "ROTATION_TARGETS")
		delete(in.example, "ROTATION_TARGETS_FILE")
		got := runCheck(t, "settings example", d, in)
		if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, "ROTATION_TARGETS or ROTATION_TARGETS_FILE") }) {
			t.Errorf("got %q, want a problem naming ROTATION_TARGETS or ROTATION_TARGETS_FILE", got)
		}
	})

	for _, tt := range []struct {
		name string
		src  string // "" leaves the folder without Go sources
		want string
	}{
		{"no sources", "", "no Go sources"},
		{"computed name", "package main\n\nfunc read(getenv func(string) string, n string) string { return getenv(n) }\n", "computed name"},
		{"unparsable", "package main\n\nfunc (", "parse"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.src != "" {
				dir = copySources(t)
				if err := os.WriteFile(filepath.Join(dir, "zz_new.go"), []byte(tt.src), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readSettings(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("readSettings: got %q, %v; want an error mentioning %q", got, err, tt.want)
			}
		})
	}
}

// copySources copies function/*.go, tests aside, to a new folder.
func copySources(t *testing.T) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(repoRoot, "function", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestDocAPIVersions: the documented table must follow the versions the
// template uses.
func TestDocAPIVersions(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	if got := checkDocAPIVersions(doc); len(got) != 0 {
		t.Fatalf("docs/deploy.md: got %q, want no problem", got)
	}
	for _, tt := range []struct{ name, old, new, want string }{
		{"stale version", "| Microsoft.KeyVault/vaults, vaults/keys | 2026-05-15 |", "| Microsoft.KeyVault/vaults, vaults/keys | 2025-05-01 |", "Microsoft.KeyVault/vaults/keys at 2025-05-01"},
		{"type left out", "| Microsoft.Web/serverfarms, sites |", "| Microsoft.Web/serverfarms |", "no API version for Microsoft.Web/sites"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(doc, tt.old) {
				t.Fatalf("docs/deploy.md does not contain %q; update the test", tt.old)
			}
			got := checkDocAPIVersions(strings.Replace(doc, tt.old, tt.new, 1))
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("got %q, want a problem mentioning %q", got, tt.want)
			}
		})
	}
}
