package activities

import "context"

// Verifier walks the token chain a pod would: KSA token, STS exchange, GSA access
// token, BigQuery call. Tokens stay inside the activity.
type Verifier struct{}

// VerifyAccess reports how far the chain gets. A denial is a result, not an error;
// errors are for failures to ask.
func (v *Verifier) VerifyAccess(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	return VerifyResult{}, errUnimplemented
}
