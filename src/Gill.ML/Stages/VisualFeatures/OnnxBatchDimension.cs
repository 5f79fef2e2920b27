using System.Text;

namespace Gill.ML.Stages.VisualFeatures;

/// <summary>
/// Rewrites an ONNX model's graph inputs, outputs and value infos whose leading dimension is the fixed value 1 into a
/// symbolic batch dimension, so that a model exported for single images (e.g. ML.NET's ResNet-18) runs whole batches.
/// Only the protobuf fields on that path are re-encoded; everything else is copied byte for byte.
/// </summary>
internal static class OnnxBatchDimension
{
    // ModelProto.graph = 7; GraphProto.input = 11, output = 12, value_info = 13; ValueInfoProto.type = 2;
    // TypeProto.tensor_type = 1; TypeProto.Tensor.shape = 2; TensorShapeProto.dim = 1; Dimension.dim_value = 1, dim_param = 2.
    public static byte[] MakeDynamic(byte[] model, string dimName, out bool changed)
    {
        bool any = false;
        var result = Rewrite(model, (f, v) => f == 7 ? RewriteGraph(v, dimName, ref any) : null);
        changed = any;
        return any ? result : model;
    }

    private static byte[] RewriteGraph(ReadOnlySpan<byte> graph, string dimName, ref bool changed)
    {
        bool c = false;
        var r = Rewrite(graph, (f, v) => f is 11 or 12 or 13 ? RewriteValueInfo(v, dimName, ref c) : null);
        changed |= c;
        return r;
    }

    private static byte[]? RewriteValueInfo(ReadOnlySpan<byte> vi, string dimName, ref bool changed)
    {
        bool c = false;
        var r = Rewrite(vi, (f, v) => f == 2
            ? Rewrite(v, (f2, v2) => f2 == 1
                ? Rewrite(v2, (f3, v3) => f3 == 2 ? RewriteShape(v3, dimName, ref c) : null)
                : null)
            : null);
        changed |= c;
        return r;
    }

    private static byte[]? RewriteShape(ReadOnlySpan<byte> shape, string dimName, ref bool changed)
    {
        bool first = true, c = false;
        var r = Rewrite(shape, (f, v) =>
        {
            if (f != 1) return null;
            bool isFirst = first;
            first = false;
            if (!isFirst) return null;
            // Dimension: dim_value (field 1, varint) == 1 → dim_param (field 2) = dimName
            int i = 0;
            while (i < v.Length)
            {
                ulong key = ReadVarint(v, ref i);
                int field = (int)(key >> 3), wire = (int)(key & 7);
                if (field == 1 && wire == 0)
                {
                    ulong value = ReadVarint(v, ref i);
                    if (value != 1) return null;
                    c = true;
                    using var ms = new MemoryStream();
                    var name = Encoding.UTF8.GetBytes(dimName);
                    WriteVarint(ms, (2 << 3) | 2);
                    WriteVarint(ms, (ulong)name.Length);
                    ms.Write(name);
                    return ms.ToArray();
                }
                Skip(v, ref i, wire);
            }
            return null;
        });
        changed |= c;
        return r;
    }

    private delegate byte[]? FieldRewriter(int field, ReadOnlySpan<byte> value);

    /// <summary>Copies a message, replacing length-delimited fields for which <paramref name="rewrite"/> returns bytes.</summary>
    private static byte[] Rewrite(ReadOnlySpan<byte> message, FieldRewriter rewrite)
    {
        using var ms = new MemoryStream(message.Length + 64);
        int i = 0;
        while (i < message.Length)
        {
            int start = i;
            ulong key = ReadVarint(message, ref i);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            if (wire == 2)
            {
                int len = checked((int)ReadVarint(message, ref i));
                var value = message.Slice(i, len);
                i += len;
                var replaced = rewrite(field, value);
                if (replaced is null)
                {
                    ms.Write(message[start..i]);
                }
                else
                {
                    WriteVarint(ms, key);
                    WriteVarint(ms, (ulong)replaced.Length);
                    ms.Write(replaced);
                }
            }
            else
            {
                Skip(message, ref i, wire);
                ms.Write(message[start..i]);
            }
        }
        return ms.ToArray();
    }

    private static void Skip(ReadOnlySpan<byte> b, ref int i, int wire)
    {
        switch (wire)
        {
            case 0: ReadVarint(b, ref i); break;
            case 1: i += 8; break;
            case 2: i += checked((int)ReadVarint(b, ref i)); break;
            case 5: i += 4; break;
            default: throw new InvalidDataException($"Unsupported protobuf wire type {wire} in the ONNX model.");
        }
        if (i > b.Length) throw new InvalidDataException("The ONNX model is truncated or not a protobuf message.");
    }

    private static ulong ReadVarint(ReadOnlySpan<byte> b, ref int i)
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (i >= b.Length) throw new InvalidDataException("The ONNX model is truncated or not a protobuf message.");
            byte x = b[i++];
            result |= (ulong)(x & 0x7f) << shift;
            if ((x & 0x80) == 0) return result;
        }
        throw new InvalidDataException("Malformed varint in the ONNX model.");
    }

    private static void WriteVarint(Stream s, ulong v)
    {
        while (v >= 0x80)
        {
            s.WriteByte((byte)(v | 0x80));
            v >>= 7;
        }
        s.WriteByte((byte)v);
    }
}
