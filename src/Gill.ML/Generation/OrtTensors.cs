using Microsoft.ML.OnnxRuntime;
using TensorElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Generation;

/// <summary>Copies between TorchSharp tensors and ONNX Runtime values, converting element types.</summary>
internal static class OrtTensors
{
    public static ScalarType ToScalarType(TensorElementType type, string what) => type switch
    {
        TensorElementType.Float => ScalarType.Float32,
        TensorElementType.Float16 => ScalarType.Float16,
        TensorElementType.BFloat16 => ScalarType.BFloat16,
        TensorElementType.Double => ScalarType.Float64,
        TensorElementType.Int32 => ScalarType.Int32,
        TensorElementType.Int64 => ScalarType.Int64,
        TensorElementType.Int16 => ScalarType.Int16,
        TensorElementType.Int8 => ScalarType.Int8,
        TensorElementType.UInt8 => ScalarType.Byte,
        TensorElementType.Bool => ScalarType.Bool,
        _ => throw new NotSupportedException($"{what}: ONNX element type {type} is not supported."),
    };

    /// <summary>A new ONNX Runtime tensor holding <paramref name="tensor"/> converted to <paramref name="type"/>.</summary>
    public static OrtValue ToOrt(Tensor tensor, TensorElementType type, string what)
    {
        var dtype = ToScalarType(type, what);
        using var scope = torch.NewDisposeScope();
        var t = tensor.detach().cpu().to(dtype).contiguous();
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, t.shape);
        try
        {
            var dst = value.GetTensorMutableRawData();
            var src = t.bytes;
            if (src.Length != dst.Length) throw new InvalidOperationException($"{what}: {src.Length} bytes for a {dst.Length}-byte ONNX tensor.");
            src.CopyTo(dst);
            return value;
        }
        catch
        {
            value.Dispose();
            throw;
        }
    }

    /// <summary>A float32 CPU tensor with the contents of an ONNX Runtime output tensor.</summary>
    public static Tensor ToTorchFloat(OrtValue value, string what)
    {
        var info = value.GetTensorTypeAndShape();
        var dtype = ToScalarType(info.ElementDataType, what);
        using var scope = torch.NewDisposeScope();
        var t = torch.empty(info.Shape, dtype);
        var src = value.GetTensorMutableRawData();
        var dst = t.bytes;
        if (src.Length != dst.Length) throw new InvalidOperationException($"{what}: {src.Length} bytes for a {dst.Length}-byte tensor.");
        src.CopyTo(dst);
        return t.to(ScalarType.Float32).MoveToOuterDisposeScope();
    }
}
