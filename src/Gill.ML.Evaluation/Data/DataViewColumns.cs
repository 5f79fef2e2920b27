using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.Evaluation;

/// <summary>Reads whole columns of an <see cref="IDataView"/> with clear errors for missing or mistyped columns.</summary>
internal static class DataViewColumns
{
    private static DataViewSchema.Column Column(IDataView data, string name, string role)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (string.IsNullOrEmpty(name)) throw new ArgumentException($"The {role} column name is empty.", nameof(name));
        var col = data.Schema.GetColumnOrNull(name);
        if (col is null)
            throw new ArgumentOutOfRangeException(nameof(name), name,
                $"The {role} column '{name}' is not in the data view (columns: {string.Join(", ", data.Schema.Where(c => !c.IsHidden).Select(c => c.Name))}).");
        return col.Value;
    }

    /// <summary>Reads a vector-of-Single (or Double) column as rows of floats; every row must have the same, non-zero length.</summary>
    public static float[][] ReadVectors(IDataView data, string name, string role)
    {
        var col = Column(data, name, role);
        if (col.Type is not VectorDataViewType vt || (vt.ItemType != NumberDataViewType.Single && vt.ItemType != NumberDataViewType.Double))
            throw new ArgumentOutOfRangeException(nameof(name), name, $"The {role} column '{name}' must be a vector of Single or Double, but it is {col.Type}.");
        var rows = new List<float[]>();
        using var cursor = data.GetRowCursor(new[] { col });
        if (vt.ItemType == NumberDataViewType.Single)
        {
            var getter = cursor.GetGetter<VBuffer<float>>(col);
            var buf = default(VBuffer<float>);
            while (cursor.MoveNext())
            {
                getter(ref buf);
                rows.Add(buf.DenseValues().ToArray());
            }
        }
        else
        {
            var getter = cursor.GetGetter<VBuffer<double>>(col);
            var buf = default(VBuffer<double>);
            while (cursor.MoveNext())
            {
                getter(ref buf);
                rows.Add(buf.DenseValues().Select(v => (float)v).ToArray());
            }
        }
        if (rows.Count == 0) throw new ArgumentException($"The {role} column '{name}' has no rows.", nameof(data));
        int d = rows[0].Length;
        if (d == 0) throw new ArgumentException($"The {role} column '{name}' holds empty vectors.", nameof(data));
        for (int i = 0; i < rows.Count; i++)
            if (rows[i].Length != d)
                throw new ArgumentException($"The {role} column '{name}' has vectors of different lengths: row 0 has {d}, row {i} has {rows[i].Length}.", nameof(data));
        return rows.ToArray();
    }

    /// <summary>Reads a text column.</summary>
    public static string[] ReadStrings(IDataView data, string name, string role)
    {
        var col = Column(data, name, role);
        if (col.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(name), name, $"The {role} column '{name}' must be text, but it is {col.Type}.");
        var rows = new List<string>();
        using var cursor = data.GetRowCursor(new[] { col });
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(col);
        var value = default(ReadOnlyMemory<char>);
        while (cursor.MoveNext())
        {
            getter(ref value);
            rows.Add(value.ToString());
        }
        if (rows.Count == 0) throw new ArgumentException($"The {role} column '{name}' has no rows.", nameof(data));
        return rows.ToArray();
    }

    /// <summary>Reads a text column or a vector-of-text column as a list of strings per row.</summary>
    public static string[][] ReadStringLists(IDataView data, string name, string role)
    {
        var col = Column(data, name, role);
        if (col.Type is TextDataViewType) return ReadStrings(data, name, role).Select(s => new[] { s }).ToArray();
        if (col.Type is not VectorDataViewType { ItemType: TextDataViewType })
            throw new ArgumentOutOfRangeException(nameof(name), name, $"The {role} column '{name}' must be text or a vector of text, but it is {col.Type}.");
        var rows = new List<string[]>();
        using var cursor = data.GetRowCursor(new[] { col });
        var getter = cursor.GetGetter<VBuffer<ReadOnlyMemory<char>>>(col);
        var buf = default(VBuffer<ReadOnlyMemory<char>>);
        while (cursor.MoveNext())
        {
            getter(ref buf);
            rows.Add(buf.DenseValues().Select(m => m.ToString()).ToArray());
        }
        if (rows.Count == 0) throw new ArgumentException($"The {role} column '{name}' has no rows.", nameof(data));
        return rows.ToArray();
    }

    /// <summary>
    /// Reads an integer-like column as lists of ints per row: Boolean (false → 0, true → 1), Int32, Int64, UInt32, key
    /// types (ML.NET keys are 1-based; they become 0-based here, with the missing key 0 rejected), or vectors of Int32/Int64.
    /// </summary>
    public static int[][] ReadIntLists(IDataView data, string name, string role)
    {
        var col = Column(data, name, role);
        var rows = new List<int[]>();
        using var cursor = data.GetRowCursor(new[] { col });
        var type = col.Type;
        int row = 0;
        if (type is KeyDataViewType)
        {
            var g = cursor.GetGetter<uint>(col);
            uint v = 0;
            while (cursor.MoveNext())
            {
                g(ref v);
                if (v == 0) throw new ArgumentException($"The {role} column '{name}' has a missing key value at row {row}.", nameof(data));
                rows.Add(new[] { (int)(v - 1) });
                row++;
            }
        }
        else if (type == BooleanDataViewType.Instance)
        {
            var g = cursor.GetGetter<bool>(col);
            bool v = false;
            while (cursor.MoveNext()) { g(ref v); rows.Add(new[] { v ? 1 : 0 }); }
        }
        else if (type == NumberDataViewType.Int32)
        {
            var g = cursor.GetGetter<int>(col);
            int v = 0;
            while (cursor.MoveNext()) { g(ref v); rows.Add(new[] { v }); }
        }
        else if (type == NumberDataViewType.Int64)
        {
            var g = cursor.GetGetter<long>(col);
            long v = 0;
            while (cursor.MoveNext()) { g(ref v); rows.Add(new[] { checked((int)v) }); }
        }
        else if (type == NumberDataViewType.UInt32)
        {
            var g = cursor.GetGetter<uint>(col);
            uint v = 0;
            while (cursor.MoveNext()) { g(ref v); rows.Add(new[] { checked((int)v) }); }
        }
        else if (type is VectorDataViewType { ItemType: var it } && it == NumberDataViewType.Int32)
        {
            var g = cursor.GetGetter<VBuffer<int>>(col);
            var b = default(VBuffer<int>);
            while (cursor.MoveNext()) { g(ref b); rows.Add(b.DenseValues().ToArray()); }
        }
        else if (type is VectorDataViewType { ItemType: var it2 } && it2 == NumberDataViewType.Int64)
        {
            var g = cursor.GetGetter<VBuffer<long>>(col);
            var b = default(VBuffer<long>);
            while (cursor.MoveNext()) { g(ref b); rows.Add(b.DenseValues().Select(x => checked((int)x)).ToArray()); }
        }
        else
        {
            throw new ArgumentOutOfRangeException(nameof(name), name,
                $"The {role} column '{name}' must be Boolean, Int32, Int64, UInt32, a key, or a vector of Int32/Int64, but it is {type}.");
        }
        if (rows.Count == 0) throw new ArgumentException($"The {role} column '{name}' has no rows.", nameof(data));
        return rows.ToArray();
    }
}
