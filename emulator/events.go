package emulator

import (
	"strings"
	"time"
)

// Key Vault key event types.
const (
	KeyNewVersionCreated = "Microsoft.KeyVault.KeyNewVersionCreated"
	KeyNearExpiry        = "Microsoft.KeyVault.KeyNearExpiry"
	KeyExpired           = "Microsoft.KeyVault.KeyExpired"
)

// KeyEventData is the data of a Key Vault key event, with Key Vault's
// PascalCase field names. NBF and EXP are Unix seconds, null when the
// version has none.
type KeyEventData struct {
	ID         string `json:"Id"`
	VaultName  string `json:"VaultName"`
	ObjectType string `json:"ObjectType"`
	ObjectName string `json:"ObjectName"`
	Version    string `json:"Version"`
	NBF        *int64 `json:"NBF"`
	EXP        *int64 `json:"EXP"`
}

// EventGridEvent is one event in the Event Grid schema. Deliveries carry a
// JSON array of them.
type EventGridEvent struct {
	ID              string       `json:"id"`
	Topic           string       `json:"topic"`
	Subject         string       `json:"subject"`
	EventType       string       `json:"eventType"`
	EventTime       time.Time    `json:"eventTime"`
	Data            KeyEventData `json:"data"`
	DataVersion     string       `json:"dataVersion"`
	MetadataVersion string       `json:"metadataVersion"`
}

// CloudEvent is one event in the CloudEvents 1.0 schema.
type CloudEvent struct {
	SpecVersion string       `json:"specversion"`
	ID          string       `json:"id"`
	Source      string       `json:"source"`
	Subject     string       `json:"subject"`
	Type        string       `json:"type"`
	Time        time.Time    `json:"time"`
	Data        KeyEventData `json:"data"`
}

// KeyEvent builds the Event Grid event Key Vault would send about version
// v of a key in vaultName. Data.Id is v.KID, the emulated vault's URL, so
// that a consumer can reach the version; the topic is the vault's ARM ID.
func (e *Emulator) KeyEvent(eventType string, v KeyVersionInfo, vaultName string) EventGridEvent {
	return EventGridEvent{
		ID:              newGUID(),
		Topic:           vaultResourceID(vaultName),
		Subject:         v.Name,
		EventType:       eventType,
		EventTime:       time.Now().UTC(),
		Data:            keyEventData(v, vaultName),
		DataVersion:     "1",
		MetadataVersion: "1",
	}
}

// KeyCloudEvent builds the same event as KeyEvent in the CloudEvents
// schema.
func (e *Emulator) KeyCloudEvent(eventType string, v KeyVersionInfo, vaultName string) CloudEvent {
	return CloudEvent{
		SpecVersion: "1.0",
		ID:          newGUID(),
		Source:      vaultResourceID(vaultName),
		Subject:     v.Name,
		Type:        eventType,
		Time:        time.Now().UTC(),
		Data:        keyEventData(v, vaultName),
	}
}

func keyEventData(v KeyVersionInfo, vaultName string) KeyEventData {
	name, version := v.Name, v.Version
	if name == "" || version == "" {
		// Fall back on the kid: https://host/keys/{name}/{version}.
		parts := strings.Split(strings.TrimSuffix(v.KID, "/"), "/")
		if n := len(parts); n >= 6 {
			name, version = parts[n-2], parts[n-1]
		}
	}
	return KeyEventData{ID: v.KID, VaultName: vaultName, ObjectType: "Key", ObjectName: name,
		Version: version, NBF: unixPtr(v.NotBefore), EXP: unixPtr(v.Expires)}
}
