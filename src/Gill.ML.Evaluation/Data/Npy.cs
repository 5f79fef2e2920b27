using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Evaluation;

/// <summary>Reads numpy <c>.npy</c> arrays (little-endian f4, f8, i4, i8; C order) into tensors.</summary>
public static class Npy
{
    private static readonly Regex Descr = new(@"'descr'\s*:\s*'([^']+)'", RegexOptions.CultureInvariant);
    private static readonly Regex Fortran = new(@"'fortran_order'\s*:\s*(True|False)", RegexOptions.CultureInvariant);
    private static readonly Regex ShapeRe = new(@"'shape'\s*:\s*\(([^)]*)\)", RegexOptions.CultureInvariant);

    /// <summary>Loads an array as a CPU tensor of its stored element type.</summary>
    public static Tensor Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Array file not found: '{path}'.", path);
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 10 || bytes[0] != 0x93 || bytes[1] != (byte)'N' || bytes[2] != (byte)'U')
            throw new InvalidDataException($"'{path}' is not a .npy file (bad magic).");
        int major = bytes[6];
        int headerLen, offset;
        if (major == 1) { headerLen = BitConverter.ToUInt16(bytes, 8); offset = 10; }
        else { headerLen = (int)BitConverter.ToUInt32(bytes, 8); offset = 12; }
        var header = System.Text.Encoding.Latin1.GetString(bytes, offset, headerLen);
        var descr = Descr.Match(header).Groups[1].Value;
        if (Fortran.Match(header).Groups[1].Value == "True") throw new NotSupportedException($"'{path}' is stored in Fortran order; save it with C order.");
        var shapeText = ShapeRe.Match(header);
        if (!shapeText.Success) throw new InvalidDataException($"'{path}': no shape in the .npy header.");
        var shape = shapeText.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse).ToArray();
        var (type, size) = descr switch
        {
            "<f4" => (ScalarType.Float32, 4),
            "<f8" => (ScalarType.Float64, 8),
            "<i4" => (ScalarType.Int32, 4),
            "<i8" => (ScalarType.Int64, 8),
            "|b1" => (ScalarType.Bool, 1),
            _ => throw new NotSupportedException($"'{path}' has numpy dtype '{descr}'; supported: <f4, <f8, <i4, <i8, |b1."),
        };
        long count = shape.Aggregate(1L, (a, b) => a * b);
        int dataStart = offset + headerLen;
        if (bytes.Length - dataStart != count * size)
            throw new InvalidDataException($"'{path}': {bytes.Length - dataStart} data bytes for shape ({string.Join(", ", shape)}) of {descr}.");
        var t = torch.empty(shape, type);
        bytes.AsSpan(dataStart, (int)(count * size)).CopyTo(t.bytes);
        return t;
    }

    /// <summary>Loads a 2-d tensor from a .npy or a safetensors file (the tensor <paramref name="name"/>, or the only one).</summary>
    internal static Tensor LoadMatrix(string path, string? name = null)
    {
        if (path.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)) return Load(path);
        using var f = Gill.ML.Serialization.SafeTensorsFile.Open(path);
        if (name is null)
        {
            if (f.Tensors.Count != 1)
                throw new ArgumentException($"'{path}' holds {f.Tensors.Count} tensors ({string.Join(", ", f.Tensors.Keys)}); name the one to use.");
            name = f.Tensors.Keys.First();
        }
        return f.Load(name);
    }
}
