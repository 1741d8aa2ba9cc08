package engine_test

import (
	"testing"

	"github.com/courier-go/courier/engine"
	"github.com/courier-go/courier/internal/storetest"
)

func TestMemoryStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		s := &engine.MemoryStore{} // the zero value is ready
		return func() engine.TokenStore { return s }
	}, storetest.Options{LeaseLapses: true, Notifies: true})
}
