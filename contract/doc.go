// Package contract holds what gkewi's workflows, activities, worker and CLI
// must agree on without importing each other: the names of the signal, update
// and query, the kinds of support notification, the ApplicationError types the
// activities return and the workflows branch on, and the Duration of requests.
// Changing a value here changes running workflows and operators' scripts.
package contract
