using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>
/// Fill operations whose scalar argument outlives the native call. TorchSharp's implicit <see cref="Scalar"/> conversion
/// creates a finalizable temporary that the JIT may consider dead as soon as its handle is read; when another thread
/// triggers a garbage collection while the kernel is still running, the finalizer can free the scalar before the kernel
/// reads it (fills read it late, after building their iterator). Holding the scalar in a <c>using</c> keeps it alive
/// until the call returns.
/// </summary>
internal static class ScalarSafeOps
{
    /// <summary><c>tensor.masked_fill(mask, value)</c> with the scalar kept alive for the whole call.</summary>
    public static Tensor MaskedFill(this Tensor tensor, Tensor mask, double value)
    {
        using var scalar = value.ToScalar();
        return tensor.masked_fill(mask, scalar);
    }

    /// <summary><c>tensor.masked_fill(mask, value)</c> for integer tensors, with the scalar kept alive for the whole call.</summary>
    public static Tensor MaskedFill(this Tensor tensor, Tensor mask, long value)
    {
        using var scalar = value.ToScalar();
        return tensor.masked_fill(mask, scalar);
    }

    /// <summary><c>tensor.index_fill_(dim, index, value)</c> with the scalar kept alive for the whole call.</summary>
    public static Tensor IndexFillInPlace(this Tensor tensor, long dim, Tensor index, double value)
    {
        using var scalar = value.ToScalar();
        return tensor.index_fill_(dim, index, scalar);
    }
}
